// Package wire holds what the Go test peers share: the go-pantheon messages they exchange,
// encoded by hand with google.golang.org/protobuf/encoding/protowire (no protoc and no
// generated code: each message has a Marshal and an Unmarshal written against the field numbers
// of the repo's proto/ tree and PROTOCOL.md), a grpc-go codec for those hand-written messages,
// and the 4-byte big-endian length framing of client connections.
//
// The peers are built offline in GOPATH mode from Debian's Go packages, so nothing here may
// need more than Go 1.19, grpc-go 1.33 and protobuf-go 1.28.
package wire

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// Marshaler is a message a peer sends; each message implements only the directions it is used in.
type Marshaler interface {
	Marshal() []byte
}

// Unmarshaler is a message a peer receives.
type Unmarshaler interface {
	Unmarshal(b []byte) error
}

// enc appends proto3 fields, leaving out zero values as proto3 does.
type enc []byte

func (e *enc) varint(num protowire.Number, v uint64) {
	if v == 0 {
		return
	}
	*e = protowire.AppendTag(*e, num, protowire.VarintType)
	*e = protowire.AppendVarint(*e, v)
}

func (e *enc) int64(num protowire.Number, v int64) { e.varint(num, uint64(v)) }

// int32 sign-extends, as protobuf encodes a negative int32.
func (e *enc) int32(num protowire.Number, v int32) { e.varint(num, uint64(int64(v))) }

func (e *enc) bool(num protowire.Number, v bool) {
	if v {
		e.varint(num, 1)
	}
}

func (e *enc) bytes(num protowire.Number, v []byte) {
	if len(v) == 0 {
		return
	}
	*e = protowire.AppendTag(*e, num, protowire.BytesType)
	*e = protowire.AppendBytes(*e, v)
}

func (e *enc) string(num protowire.Number, v string) { e.bytes(num, []byte(v)) }

// message writes a nested message even when it is empty (repeated elements must all appear).
func (e *enc) message(num protowire.Number, v []byte) {
	*e = protowire.AppendTag(*e, num, protowire.BytesType)
	*e = protowire.AppendBytes(*e, v)
}

// packed writes a packed repeated int64 field.
func (e *enc) packed(num protowire.Number, vs []int64) {
	if len(vs) == 0 {
		return
	}
	var inner []byte
	for _, v := range vs {
		inner = protowire.AppendVarint(inner, uint64(v))
	}
	e.bytes(num, inner)
}

// field is one decoded field: v for varints, b for length-delimited values.
type field struct {
	num protowire.Number
	typ protowire.Type
	v   uint64
	b   []byte
}

// walk calls f for every varint and length-delimited field of b and skips the other types.
func walk(b []byte, f func(field) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		fl := field{num: num, typ: typ}
		switch typ {
		case protowire.VarintType:
			fl.v, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			fl.b, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if typ == protowire.VarintType || typ == protowire.BytesType {
			if err := f(fl); err != nil {
				return err
			}
		}
	}
	return nil
}

// int64s reads a repeated int64 field, packed or not.
func (fl field) int64s(into *[]int64) error {
	if fl.typ == protowire.VarintType {
		*into = append(*into, int64(fl.v))
		return nil
	}
	b := fl.b
	for len(b) > 0 {
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		*into = append(*into, int64(v))
		b = b[n:]
	}
	return nil
}

// clone copies a length-delimited value out of the buffer it was decoded from.
func clone(b []byte) []byte { return append([]byte(nil), b...) }
