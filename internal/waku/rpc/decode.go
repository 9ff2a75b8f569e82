package rpc

import (
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Unmarshal decodes b into m (a generated message) strictly: on top of
// proto.Unmarshal's checks, a declared field that arrives with another wire
// type is an error, where protobuf-go would keep it as an unknown field and
// carry on with the field unset; nwaku's decoders fail on it, and a store
// or lightpush service answers such a request 400. Fields not declared are
// skipped, as everywhere. An error inside a nested message is a
// *FieldError naming the top-level field it is in, so that a service can
// tell a bad request from a bad WakuMessage inside a good one.
func Unmarshal(b []byte, m proto.Message) error {
	if err := check(b, m.ProtoReflect().Descriptor()); err != nil {
		return err
	}
	return proto.Unmarshal(b, m)
}

// FieldError is an error in the value of a message-typed field.
type FieldError struct {
	Field protowire.Number
	Name  protoreflect.Name
	Err   error
}

// Error names the field and what is wrong in it.
func (e *FieldError) Error() string { return fmt.Sprintf("%s (field %d): %v", e.Name, e.Field, e.Err) }

// Unwrap returns the error in the field's value.
func (e *FieldError) Unwrap() error { return e.Err }

// check walks b as an encoding of md, field by field, and reports the first
// field that is truncated, declared with another wire type, a string that
// is not UTF-8 (proto3 strings are UTF-8; protobuf-go refuses them too, but
// without saying where), or a nested message that fails the same checks.
func check(b []byte, md protoreflect.MessageDescriptor) error {
	fields := md.Fields()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		fd := fields.ByNumber(num)
		packed := fd != nil && fd.IsList() && typ == protowire.BytesType && wireType(fd) != protowire.BytesType
		if fd != nil && typ != wireType(fd) && !packed {
			return fmt.Errorf("field %d has wire type %d", num, typ)
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		value := b[:n]
		b = b[n:]
		if fd == nil || typ != protowire.BytesType {
			continue
		}
		v, _ := protowire.ConsumeBytes(value)
		switch {
		case packed:
			if err := checkPacked(v, fd); err != nil {
				return fmt.Errorf("field %d: %w", num, err)
			}
		case fd.Kind() == protoreflect.MessageKind:
			if err := check(v, fd.Message()); err != nil {
				return &FieldError{Field: num, Name: fd.Name(), Err: err}
			}
		case fd.Kind() == protoreflect.StringKind && fd.ParentFile().Syntax() == protoreflect.Proto3 && !utf8.Valid(v):
			return fmt.Errorf("field %d (%s): invalid UTF-8", num, fd.Name())
		}
	}
	return nil
}

// checkPacked checks the elements of a packed repeated scalar field.
func checkPacked(b []byte, fd protoreflect.FieldDescriptor) error {
	for len(b) > 0 {
		var n int
		switch wireType(fd) {
		case protowire.VarintType:
			_, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			_, n = protowire.ConsumeFixed32(b)
		default:
			_, n = protowire.ConsumeFixed64(b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

// wireType is the wire type a field's values are encoded with (unpacked).
func wireType(fd protoreflect.FieldDescriptor) protowire.Type {
	switch fd.Kind() {
	case protoreflect.BoolKind, protoreflect.EnumKind, protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Uint32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Uint64Kind:
		return protowire.VarintType
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return protowire.Fixed32Type
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return protowire.Fixed64Type
	case protoreflect.GroupKind:
		return protowire.StartGroupType
	}
	return protowire.BytesType // string, bytes, message
}
