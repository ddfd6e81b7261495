package wire

// Tunnel is both TunnelRequest and TunnelResponse of player.intra.v1 (fields 1–6) and
// room.intra.v1 (fields 1–10): the two share their layout, and the player messages simply
// never carry the room's fields 7–10.
type Tunnel struct {
	Data        []byte
	DataVersion uint64
	Obj         int64
	Mod         int32
	Seq         int32
	Index       int32
	ConnID      int32
	FragID      int32
	FragCount   int32
	FragIndex   int32
}

func (m *Tunnel) Marshal() []byte {
	var e enc
	e.bytes(1, m.Data)
	e.varint(2, m.DataVersion)
	e.int64(3, m.Obj)
	e.int32(4, m.Mod)
	e.int32(5, m.Seq)
	e.int32(6, m.Index)
	e.int32(7, m.ConnID)
	e.int32(8, m.FragID)
	e.int32(9, m.FragCount)
	e.int32(10, m.FragIndex)
	return e
}

func (m *Tunnel) Unmarshal(b []byte) error {
	*m = Tunnel{}
	return walk(b, func(f field) error {
		switch f.num {
		case 1:
			m.Data = clone(f.b)
		case 2:
			m.DataVersion = f.v
		case 3:
			m.Obj = int64(f.v)
		case 4:
			m.Mod = int32(f.v)
		case 5:
			m.Seq = int32(f.v)
		case 6:
			m.Index = int32(f.v)
		case 7:
			m.ConnID = int32(f.v)
		case 8:
			m.FragID = int32(f.v)
		case 9:
			m.FragCount = int32(f.v)
		case 10:
			m.FragIndex = int32(f.v)
		}
		return nil
	})
}

// PushBody is broadcaster.service.push.v1.PushBody.
type PushBody struct {
	Data        []byte
	DataVersion uint64
	Obj         int64
	Mod         int32
	Seq         int32
}

func (m *PushBody) Marshal() []byte {
	var e enc
	e.bytes(1, m.Data)
	e.varint(2, m.DataVersion)
	e.int64(3, m.Obj)
	e.int32(4, m.Mod)
	e.int32(5, m.Seq)
	return e
}

// MulticastRequest is broadcaster.service.push.v1.MulticastRequest.
type MulticastRequest struct {
	Bodies []PushBody
	UIDs   []int64
	Color  string
}

func (m *MulticastRequest) Marshal() []byte {
	var e enc
	for i := range m.Bodies {
		e.message(1, m.Bodies[i].Marshal())
	}
	e.packed(2, m.UIDs)
	e.string(3, m.Color)
	return e
}

// MulticastResponse is broadcaster.service.push.v1.MulticastResponse.
type MulticastResponse struct {
	PushedUIDs []int64
}

func (m *MulticastResponse) Unmarshal(b []byte) error {
	*m = MulticastResponse{}
	return walk(b, func(f field) error {
		if f.num == 1 {
			return f.int64s(&m.PushedUIDs)
		}
		return nil
	})
}

// Packet is packet.Packet, the envelope of every client frame.
type Packet struct {
	Data        []byte
	DataVersion uint64
	Obj         int64
	Mod         int32
	Seq         int32
	Ver         int32
	Index       int32
	ConnID      int32
	FragID      int32
	FragCount   int32
	FragIndex   int32
	Compress    bool
}

func (m *Packet) Marshal() []byte {
	var e enc
	e.bytes(1, m.Data)
	e.varint(2, m.DataVersion)
	e.int64(3, m.Obj)
	e.int32(4, m.Mod)
	e.int32(5, m.Seq)
	e.int32(6, m.Ver)
	e.int32(7, m.Index)
	e.int32(8, m.ConnID)
	e.int32(9, m.FragID)
	e.int32(10, m.FragCount)
	e.int32(11, m.FragIndex)
	e.bool(20, m.Compress)
	return e
}

func (m *Packet) Unmarshal(b []byte) error {
	*m = Packet{}
	return walk(b, func(f field) error {
		switch f.num {
		case 1:
			m.Data = clone(f.b)
		case 2:
			m.DataVersion = f.v
		case 3:
			m.Obj = int64(f.v)
		case 4:
			m.Mod = int32(f.v)
		case 5:
			m.Seq = int32(f.v)
		case 6:
			m.Ver = int32(f.v)
		case 7:
			m.Index = int32(f.v)
		case 8:
			m.ConnID = int32(f.v)
		case 9:
			m.FragID = int32(f.v)
		case 10:
			m.FragCount = int32(f.v)
		case 11:
			m.FragIndex = int32(f.v)
		case 20:
			m.Compress = f.v != 0
		}
		return nil
	})
}

// CSHandshake is message.CSHandshake (go-pantheon's fields; Janus's version field 7 stays 0,
// which is the legacy handshake).
type CSHandshake struct {
	Pub         []byte
	Sign        []byte
	Token       string
	ServerID    int64
	Timestamp   int64
	CertVersion int32
}

func (m *CSHandshake) Marshal() []byte {
	var e enc
	e.bytes(1, m.Pub)
	e.bytes(2, m.Sign)
	e.string(3, m.Token)
	e.int64(4, m.ServerID)
	e.int64(5, m.Timestamp)
	e.int32(6, m.CertVersion)
	return e
}

// SCHandshake is message.SCHandshake.
type SCHandshake struct {
	Pub         []byte
	Sign        []byte
	Timestamp   int64
	CertVersion int32
	StartIndex  int32
}

func (m *SCHandshake) Unmarshal(b []byte) error {
	*m = SCHandshake{}
	return walk(b, func(f field) error {
		switch f.num {
		case 1:
			m.Pub = clone(f.b)
		case 2:
			m.Sign = clone(f.b)
		case 3:
			m.Timestamp = int64(f.v)
		case 4:
			m.CertVersion = int32(f.v)
		case 5:
			m.StartIndex = int32(f.v)
		}
		return nil
	})
}

// CSHeartbeat is message.CSHeartbeat.
type CSHeartbeat struct {
	ClientTime int64
}

func (m *CSHeartbeat) Marshal() []byte {
	var e enc
	e.int64(1, m.ClientTime)
	return e
}

func (m *CSHeartbeat) Unmarshal(b []byte) error {
	*m = CSHeartbeat{}
	return walk(b, func(f field) error {
		if f.num == 1 {
			m.ClientTime = int64(f.v)
		}
		return nil
	})
}

// SCHeartbeat codes (message.SCHeartbeat.Code).
const (
	HeartbeatErrServer int32 = 0
	HeartbeatSucceeded int32 = 1
	HeartbeatErrTime   int32 = 2
)

// SCHeartbeat is message.SCHeartbeat.
type SCHeartbeat struct {
	ServerTime int64
	Code       int32
}

func (m *SCHeartbeat) Marshal() []byte {
	var e enc
	e.int64(1, m.ServerTime)
	e.int32(2, m.Code)
	return e
}

func (m *SCHeartbeat) Unmarshal(b []byte) error {
	*m = SCHeartbeat{}
	return walk(b, func(f field) error {
		switch f.num {
		case 1:
			m.ServerTime = int64(f.v)
		case 2:
			m.Code = int32(f.v)
		}
		return nil
	})
}

// SCServerUnexpectedErr is message.SCServerUnexpectedErr.
type SCServerUnexpectedErr struct {
	Mod int32
	Seq int32
	Msg string
}

func (m *SCServerUnexpectedErr) Unmarshal(b []byte) error {
	*m = SCServerUnexpectedErr{}
	return walk(b, func(f field) error {
		switch f.num {
		case 1:
			m.Mod = int32(f.v)
		case 2:
			m.Seq = int32(f.v)
		case 3:
			m.Msg = string(f.b)
		}
		return nil
	})
}

// OnlineStatus values of gate.intra.v1.OnlineStatus.
const (
	StatusGate int32 = 1
)

// AuthToken is gate.intra.v1.AuthToken, what Lares seals into a token.
type AuthToken struct {
	Rand        string
	Color       string
	AccountID   int64
	ServerID    int64
	Timeout     int64
	Location    int32
	Status      int32
	Unencrypted bool
}

func (m *AuthToken) Marshal() []byte {
	var e enc
	e.string(1, m.Rand)
	e.string(2, m.Color)
	e.int64(3, m.AccountID)
	e.int64(4, m.ServerID)
	e.int64(5, m.Timeout)
	e.int32(6, m.Location)
	e.int32(7, m.Status)
	e.bool(8, m.Unencrypted)
	return e
}
