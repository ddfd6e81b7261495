package wire

// The broadcaster.service.push.v1 messages a pusher sends besides MulticastRequest (see
// messages.go): the single-player Push and the Broadcast, and their answers.

// PushRequest is broadcaster.service.push.v1.PushRequest. Roma's Publisher.Push fills only
// Bodies and UID: no colour, no sid.
type PushRequest struct {
	Bodies []PushBody
	Color  string
	Sid    int64
	UID    int64
}

func (m *PushRequest) Marshal() []byte {
	var e enc
	for i := range m.Bodies {
		e.message(1, m.Bodies[i].Marshal())
	}
	e.string(2, m.Color)
	e.int64(3, m.Sid)
	e.int64(4, m.UID)
	return e
}

// PushResponse is broadcaster.service.push.v1.PushResponse.
type PushResponse struct {
	Pushed bool
}

func (m *PushResponse) Unmarshal(b []byte) error {
	*m = PushResponse{}
	return walk(b, func(f field) error {
		if f.num == 1 {
			m.Pushed = f.v != 0
		}
		return nil
	})
}

// BroadcastRequest is broadcaster.service.push.v1.BroadcastRequest.
type BroadcastRequest struct {
	Bodies []PushBody
	Color  string
	Sid    int64
}

func (m *BroadcastRequest) Marshal() []byte {
	var e enc
	for i := range m.Bodies {
		e.message(1, m.Bodies[i].Marshal())
	}
	e.string(2, m.Color)
	e.int64(3, m.Sid)
	return e
}

// BroadcastResponse is broadcaster.service.push.v1.BroadcastResponse (no fields).
type BroadcastResponse struct{}

func (m *BroadcastResponse) Unmarshal(b []byte) error {
	return walk(b, func(field) error { return nil })
}
