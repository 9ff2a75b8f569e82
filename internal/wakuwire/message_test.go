package wakuwire_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

func TestHashVectors(t *testing.T) {
	const (
		specTopic   = "/waku/2/default-waku/proto"
		specContent = "/waku/2/default-content/proto"
		specTS      = int64(0x175789bfa23f8400)
		goWakuTS    = int64(123456789123456789)
	)
	payload := []byte("\x01\x02\x03\x04TEST\x05\x06\x07\x08")
	meta12 := []byte("super-secret")
	meta64 := make([]byte, 64)
	for i := range meta64 {
		meta64[i] = byte(i)
	}
	for _, tc := range []struct {
		name   string
		topic  string
		msg    wakuwire.Message
		want   string
		source string
	}{
		// 14/WAKU2-MESSAGE "Test vectors" (vacp2p/rfc-index).
		{"spec meta 12 bytes", specTopic, wakuwire.Message{Payload: payload, ContentTopic: specContent, Meta: meta12, Timestamp: specTS},
			"64cce733fed134e83da02b02c6f689814872b1a0ac97ea56b76095c3c72bfe05", "14/WAKU2-MESSAGE"},
		{"spec meta 64 bytes", specTopic, wakuwire.Message{Payload: payload, ContentTopic: specContent, Meta: meta64, Timestamp: specTS},
			"7158b6498753313368b9af8f6e0a0a05104f68f972981da42a43bc53fb0c1b27", "14/WAKU2-MESSAGE"},
		{"spec no meta", specTopic, wakuwire.Message{Payload: payload, ContentTopic: specContent, Timestamp: specTS},
			"a2554498b31f5bcdfcbf7fa58ad1c2d45f0254f3f8110a85588ec3cf10720fd8", "14/WAKU2-MESSAGE"},
		{"spec empty payload", specTopic, wakuwire.Message{ContentTopic: specContent, Meta: meta12, Timestamp: specTS},
			"483ea950cb63f9b9d6926b262bb36194d3f40a0463ce8446228350bd44e96de4", "14/WAKU2-MESSAGE"},
		// go-waku waku/v2/protocol/pb/utils_test.go (84a4b1b).
		{"go-waku TestEnvelopeHash", "test", wakuwire.Message{Payload: []byte("Hello World"), ContentTopic: "Test", Version: 1, Timestamp: goWakuTS},
			"b659607f2aae18848dcaa7d51cb37e6cc6fc33402c704ff0c016337d83ad6150", "go-waku"},
		{"go-waku TestEmptyMeta", specTopic, wakuwire.Message{Payload: payload, ContentTopic: specContent, Meta: []byte{}, Version: 1, Timestamp: goWakuTS},
			"f0183c2e370e473ff471bbe1028d0d8a940949c02f3007a1ccd21fed356852a0", "go-waku"},
		{"go-waku Test13ByteMeta", specTopic, wakuwire.Message{Payload: payload, ContentTopic: specContent, Meta: meta12, Version: 1, Timestamp: goWakuTS},
			"f673cd2c9c973d685b52ca74c2559e001733a3a31a49ffc7b6e8713decba5a55", "go-waku"},
		{"go-waku TestZeroLenPayload", specTopic, wakuwire.Message{ContentTopic: specContent, Meta: meta12, Version: 1, Timestamp: goWakuTS},
			"978ccc9a665029f9829d42d84e3a49ad3a4791cce53fb5a8b581ef43ad6b4d2f", "go-waku"},
		// Unset timestamp: go-waku still appends 8 zero bytes (js-waku would not).
		{"go-waku TestHashWithTimestamp unset", specTopic, wakuwire.Message{ContentTopic: specContent, Meta: meta12, Version: 1},
			"58e2fc032a82c4adeb967a8b87086d0d6fb304912f120d4404e6236add8f1f56", "go-waku"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := wakuwire.Hash(tc.topic, &tc.msg)
			if hex.EncodeToString(got[:]) != tc.want {
				t.Errorf("Hash = %x, want %s (%s)", got, tc.want, tc.source)
			}
		})
	}
}

// wakuMessageDescriptor mirrors go-waku's waku/v2/protocol/pb/message.proto
// (proto3 with optional fields) so protobuf-go's own encoder can serve as the
// reference for Marshal and as a source of bytes for Unmarshal.
func wakuMessageDescriptor(t *testing.T) protoreflect.MessageDescriptor {
	t.Helper()
	opt := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
	field := func(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, oneof *int32) *descriptorpb.FieldDescriptorProto {
		f := &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(num), Label: &opt, Type: typ.Enum(), JsonName: proto.String(name)}
		if oneof != nil {
			f.OneofIndex = oneof
			f.Proto3Optional = proto.Bool(true)
		}
		return f
	}
	var oneofs []*descriptorpb.OneofDescriptorProto
	optional := func(name string) *int32 {
		oneofs = append(oneofs, &descriptorpb.OneofDescriptorProto{Name: proto.String("_" + name)})
		return proto.Int32(int32(len(oneofs) - 1))
	}
	fields := []*descriptorpb.FieldDescriptorProto{
		field("payload", 1, descriptorpb.FieldDescriptorProto_TYPE_BYTES, nil),
		field("content_topic", 2, descriptorpb.FieldDescriptorProto_TYPE_STRING, nil),
		field("version", 3, descriptorpb.FieldDescriptorProto_TYPE_UINT32, optional("version")),
		field("timestamp", 10, descriptorpb.FieldDescriptorProto_TYPE_SINT64, optional("timestamp")),
		field("meta", 11, descriptorpb.FieldDescriptorProto_TYPE_BYTES, optional("meta")),
		field("ephemeral", 31, descriptorpb.FieldDescriptorProto_TYPE_BOOL, optional("ephemeral")),
		field("rate_limit_proof", 21, descriptorpb.FieldDescriptorProto_TYPE_BYTES, optional("rate_limit_proof")),
	}
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name:        proto.String("wakuwire_test/message.proto"),
		Package:     proto.String("waku.message.v1"),
		Syntax:      proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{{Name: proto.String("WakuMessage"), Field: fields, OneofDecl: oneofs}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return fd.Messages().ByName("WakuMessage")
}

// dynWaku builds the reference message, setting a field only when the
// Message would emit it (an unset optional is absent, as in go-waku when the
// sender leaves it nil).
func dynWaku(md protoreflect.MessageDescriptor, m wakuwire.Message, rlnProof []byte) *dynamicpb.Message {
	d := dynamicpb.NewMessage(md)
	f := md.Fields()
	if len(m.Payload) > 0 {
		d.Set(f.ByName("payload"), protoreflect.ValueOfBytes(m.Payload))
	}
	if m.ContentTopic != "" {
		d.Set(f.ByName("content_topic"), protoreflect.ValueOfString(m.ContentTopic))
	}
	if m.Version != 0 {
		d.Set(f.ByName("version"), protoreflect.ValueOfUint32(m.Version))
	}
	if m.Timestamp != 0 {
		d.Set(f.ByName("timestamp"), protoreflect.ValueOfInt64(m.Timestamp))
	}
	if len(m.Meta) > 0 {
		d.Set(f.ByName("meta"), protoreflect.ValueOfBytes(m.Meta))
	}
	if m.Ephemeral {
		d.Set(f.ByName("ephemeral"), protoreflect.ValueOfBool(true))
	}
	if rlnProof != nil {
		d.Set(f.ByName("rate_limit_proof"), protoreflect.ValueOfBytes(rlnProof))
	}
	return d
}

func wwMessageEqual(a, b wakuwire.Message) bool {
	return bytes.Equal(a.Payload, b.Payload) && a.ContentTopic == b.ContentTopic && a.Version == b.Version &&
		a.Timestamp == b.Timestamp && bytes.Equal(a.Meta, b.Meta) && a.Ephemeral == b.Ephemeral
}

var wwMessages = []struct {
	name string
	msg  wakuwire.Message
}{
	{"empty", wakuwire.Message{}},
	{"payload only", wakuwire.Message{Payload: []byte{1, 2, 3}}},
	{"typical status", wakuwire.Message{Payload: bytes.Repeat([]byte{0xab}, 300), ContentTopic: "/waku/1/0xf8946aac/rfc26", Version: 1, Timestamp: 1700000000123456789}},
	{"negative timestamp zigzag", wakuwire.Message{ContentTopic: "x", Timestamp: -1}},
	{"min timestamp", wakuwire.Message{Timestamp: -1 << 63}},
	{"max version", wakuwire.Message{Version: 1<<32 - 1}},
	{"all fields", wakuwire.Message{Payload: []byte("p"), ContentTopic: "/a/1/b/proto", Version: 2, Timestamp: 42, Meta: bytes.Repeat([]byte{7}, 64), Ephemeral: true}},
	{"unicode topic", wakuwire.Message{ContentTopic: "/app/1/ünïcödé/proto", Ephemeral: true}},
}

func TestMessageMarshalMatchesProtobuf(t *testing.T) {
	md := wakuMessageDescriptor(t)
	for _, tc := range wwMessages {
		t.Run(tc.name, func(t *testing.T) {
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(dynWaku(md, tc.msg, nil))
			if err != nil {
				t.Fatal(err)
			}
			got := tc.msg.Marshal()
			if !bytes.Equal(got, want) {
				t.Fatalf("Marshal = %x\nprotobuf-go = %x", got, want)
			}
			var back wakuwire.Message
			if err := back.Unmarshal(got); err != nil {
				t.Fatal(err)
			}
			if !wwMessageEqual(back, tc.msg) {
				t.Errorf("round trip = %+v, want %+v", back, tc.msg)
			}
		})
	}
}

func TestMessageUnmarshalProtobufBytes(t *testing.T) {
	// A message as go-waku would send it with an RLN proof (field 21) that
	// this package does not model: it must be skipped, the rest decoded.
	md := wakuMessageDescriptor(t)
	msg := wakuwire.Message{Payload: []byte("data"), ContentTopic: "/waku/1/0x01020304/rfc26", Version: 1, Timestamp: 99, Meta: []byte("m"), Ephemeral: true}
	b, err := proto.Marshal(dynWaku(md, msg, []byte("proof bytes")))
	if err != nil {
		t.Fatal(err)
	}
	var got wakuwire.Message
	if err := got.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	if !wwMessageEqual(got, msg) {
		t.Errorf("got %+v, want %+v", got, msg)
	}
	// And the reverse: what we marshal, protobuf-go reads back field by field.
	d := dynamicpb.NewMessage(md)
	if err := proto.Unmarshal(msg.Marshal(), d); err != nil {
		t.Fatal(err)
	}
	f := md.Fields()
	if ts := d.Get(f.ByName("timestamp")).Int(); ts != 99 {
		t.Errorf("protobuf-go read timestamp %d", ts)
	}
	if !d.Get(f.ByName("ephemeral")).Bool() || d.Get(f.ByName("content_topic")).String() != msg.ContentTopic {
		t.Errorf("protobuf-go read %v", d)
	}
}

func TestMessageMarshalHandBuilt(t *testing.T) {
	// Independent of protobuf-go's encoder: bytes laid out by hand.
	m := wakuwire.Message{Payload: []byte{0xaa}, ContentTopic: "t", Version: 1, Timestamp: -2, Meta: []byte{0xbb}, Ephemeral: true}
	want := []byte{
		0x0a, 0x01, 0xaa, // 1: payload
		0x12, 0x01, 't', // 2: content_topic
		0x18, 0x01, // 3: version
		0x50, 0x03, // 10: timestamp, zigzag(-2) = 3
		0x5a, 0x01, 0xbb, // 11: meta
		0xf8, 0x01, 0x01, // 31: ephemeral (tag 31<<3|0 = 248 = f8 01)
	}
	if got := m.Marshal(); !bytes.Equal(got, want) {
		t.Errorf("Marshal = %x, want %x", got, want)
	}
}

func TestMessageUnmarshalErrors(t *testing.T) {
	tag := func(num protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, num, typ) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"payload as varint", cat(tag(1, protowire.VarintType), []byte{1})},
		{"content topic as fixed32", cat(tag(2, protowire.Fixed32Type), []byte{1, 2, 3, 4})},
		{"version as bytes", cat(tag(3, protowire.BytesType), []byte{1, 0})},
		{"timestamp as fixed64", cat(tag(10, protowire.Fixed64Type), make([]byte, 8))},
		{"meta as varint", cat(tag(11, protowire.VarintType), []byte{0})},
		{"ephemeral as bytes", cat(tag(31, protowire.BytesType), []byte{0})},
		{"truncated length", cat(tag(1, protowire.BytesType), []byte{5, 1, 2})},
		{"truncated varint", cat(tag(10, protowire.VarintType), []byte{0x80})},
		{"field number zero", []byte{0x02, 0x00}},
		{"truncated tag", []byte{0x80}},
		{"invalid utf-8 topic", cat(tag(2, protowire.BytesType), []byte{2, 0xff, 0xfe})},
		{"unknown field truncated", cat(tag(21, protowire.BytesType), []byte{9})},
		{"stray end group", tag(7, protowire.EndGroupType)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m wakuwire.Message
			err := m.Unmarshal(tc.in)
			if !errors.Is(err, wakuwire.ErrMalformed) {
				t.Errorf("Unmarshal(%x) = %v, want ErrMalformed", tc.in, err)
			}
		})
	}
}

func TestMessageUnmarshalSkipsUnknownAndResets(t *testing.T) {
	b := protowire.AppendTag(nil, 99, protowire.Fixed32Type)
	b = protowire.AppendFixed32(b, 7)
	b = protowire.AppendTag(b, 50, protowire.StartGroupType)
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, 5)
	b = protowire.AppendTag(b, 50, protowire.EndGroupType)
	b = append(b, (&wakuwire.Message{ContentTopic: "kept"}).Marshal()...)
	m := wakuwire.Message{Payload: []byte("stale"), Version: 9, Ephemeral: true}
	if err := m.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	if !wwMessageEqual(m, wakuwire.Message{ContentTopic: "kept"}) {
		t.Errorf("got %+v: unknown fields not skipped or old fields kept", m)
	}
	// Byte fields must not alias the input.
	in := (&wakuwire.Message{Payload: []byte("abc")}).Marshal()
	if err := m.Unmarshal(in); err != nil {
		t.Fatal(err)
	}
	in[2] = 'X'
	if string(m.Payload) != "abc" {
		t.Errorf("payload aliases input: %q", m.Payload)
	}
}

func TestMessageValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    wakuwire.Message
		ok   bool
	}{
		{"ok", wakuwire.Message{Payload: []byte{1}, ContentTopic: "c", Meta: make([]byte, 64)}, true},
		{"no payload", wakuwire.Message{ContentTopic: "c"}, false},
		{"no topic", wakuwire.Message{Payload: []byte{1}}, false},
		{"meta 65", wakuwire.Message{Payload: []byte{1}, ContentTopic: "c", Meta: make([]byte, 65)}, false},
	} {
		if err := tc.m.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v", tc.name, err)
		}
	}
}
