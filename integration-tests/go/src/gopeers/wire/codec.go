package wire

import "fmt"

// Codec is a grpc-go codec (both the encoding.Codec and the older grpc.Codec interface) for
// the hand-written messages of this package. It calls itself "proto", so the content type on
// the wire is application/grpc+proto, as for generated code: servers install it with
// grpc.CustomCodec, clients with grpc.ForceCodec.
type Codec struct{}

func (Codec) Marshal(v interface{}) ([]byte, error) {
	m, ok := v.(Marshaler)
	if !ok {
		return nil, fmt.Errorf("wire: %T cannot be sent", v)
	}
	return m.Marshal(), nil
}

func (Codec) Unmarshal(data []byte, v interface{}) error {
	m, ok := v.(Unmarshaler)
	if !ok {
		return fmt.Errorf("wire: %T cannot be received", v)
	}
	return m.Unmarshal(data)
}

// Name is the encoding.Codec name.
func (Codec) Name() string { return "proto" }

// String is the grpc.Codec name.
func (Codec) String() string { return "proto" }
