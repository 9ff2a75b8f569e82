package archive

import (
	"bytes"
	"encoding/json"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// referenceDecode is what DecodeMessageJSON did with encoding/json: the
// behaviour the hand-written parser keeps.
func referenceDecode(b []byte) (Message, error) {
	var m Message
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return m, err
	}
	if dec.More() {
		return m, errTrailing
	}
	// encoding/json accepts trailing spaces but not a second value.
	var rest json.RawMessage
	if err := dec.Decode(&rest); err == nil {
		return m, errTrailing
	}
	return m, nil
}

var errTrailing = &json.SyntaxError{}

const sigHex = "0x04" + "11111111111111111111111111111111111111111111111111111111111111112222222222222222222222222222222222222222222222222222222222222222"

func TestParseMessageJSONMatchesEncodingJSON(t *testing.T) {
	cases := []struct {
		name, in string
		ok       bool
	}{
		{"full", `{"sig":"` + sigHex + `","timestamp":1700000000,"topic":"0x01020304","payload":"0xabcd","padding":"00","hash":"0xff","thirdPartyId":"d\u00e9"}`, true},
		{"spaces", " \n{ \"sig\" : \"" + sigHex + "\" ,\t\"hash\":\"0x01\" , \"topic\":\"01020304\" } \n", true},
		{"case-insensitive keys", `{"SIG":"` + sigHex + `","Hash":"01","TOPIC":"0x01020304"}`, true},
		{"last of repeated wins", `{"hash":"01","hash":"02","sig":"` + sigHex + `","topic":"0x01020304"}`, true},
		{"nulls", `{"sig":"` + sigHex + `","hash":"01","topic":null,"timestamp":null,"padding":null,"thirdPartyId":null}`, true},
		{"escaped hex", `{"sig":"` + sigHex + `","hash":"\u0030\u0031","topic":"0x01020304"}`, true},
		{"escaped key", `{"si\u0067":"` + sigHex + `","hash":"01","topic":"0x01020304"}`, true},
		{"empty object", `{}`, true},
		{"0x0X prefix", `{"hash":"0x0Xab"}`, true},
		{"unknown field", `{"sig":"0x04","bogus":1}`, false},
		{"unknown nested", `{"bogus":{"a":[1,{"b":"}"}]}}`, false},
		{"trailing data", `{} {}`, false},
		{"trailing garbage", `{}x`, false},
		{"odd hex", `{"hash":"0x123"}`, false},
		{"bad hex", `{"hash":"0xzz"}`, false},
		{"negative timestamp", `{"timestamp":-1}`, false},
		{"float timestamp", `{"timestamp":1.5}`, false},
		{"exp timestamp", `{"timestamp":1e3}`, false},
		{"overflow timestamp", `{"timestamp":18446744073709551616}`, false},
		{"string timestamp", `{"timestamp":"1"}`, false},
		{"number hash", `{"hash":12}`, false},
		{"array hash", `{"hash":[1]}`, false},
		{"bad topic", `{"topic":"0x0102"}`, false},
		{"control char", "{\"hash\":\"0\n1\"}", false},
		{"unterminated", `{"hash":"01"`, false},
		{"unterminated string", `{"hash":"01`, false},
		{"missing colon", `{"hash" "01"}`, false},
		{"missing comma", `{"hash":"01" "sig":"01"}`, false},
		{"trailing comma", `{"hash":"01",}`, false},
		{"not an object", `[1]`, false},
		{"empty", ``, false},
		{"bad third party id", `{"thirdPartyId":12}`, false},
		{"bare word", `{"hash":nul}`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseMessageJSON([]byte(c.in))
			want, werr := referenceDecode([]byte(c.in))
			if (err == nil) != c.ok || (werr == nil) != c.ok {
				t.Fatalf("parse error %v, encoding/json error %v; want ok=%v", err, werr, c.ok)
			}
			if c.ok && !reflect.DeepEqual(got, want) {
				t.Errorf("parsed %+v, encoding/json %+v", got, want)
			}
		})
	}
}

// FuzzParseMessageJSON: the parser accepts what encoding/json accepts and
// decodes the same message.
func FuzzParseMessageJSON(f *testing.F) {
	f.Add([]byte(`{"sig":"` + sigHex + `","timestamp":1700000000,"topic":"0x01020304","payload":"0xabcd","hash":"0xff"}`))
	f.Add([]byte(`{"thirdPartyId":"a\"b","padding":null}`))
	f.Add([]byte(`{"bogus":[{"x":"]"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := parseMessageJSON(b)
		want, werr := referenceDecode(b)
		if (err == nil) != (werr == nil) {
			t.Fatalf("%q: parse error %v, encoding/json error %v", b, err, werr)
		}
		if err == nil && !reflect.DeepEqual(normalise(got), normalise(want)) {
			t.Fatalf("%q: parsed %+v, encoding/json %+v", b, got, want)
		}
	})
}

// normalise maps empty byte fields to nil: "" decodes to an empty slice
// either way, and only the bytes matter.
func normalise(m Message) Message {
	for _, f := range []*HexBytes{&m.Sig, &m.Payload, &m.Padding, &m.Hash} {
		if len(*f) == 0 {
			*f = nil
		}
	}
	return m
}

func TestDecodeMessageJSONMemory(t *testing.T) {
	// A payload at the archive cap: the decoder's allocations are the
	// decoded bytes (30 MB), not copies of the 60 MB of hex.
	payload := strings.Repeat("ab", MaxMessageBytes-65)
	in := []byte(`{"sig":"` + sigHex + `","timestamp":1,"topic":"0x01020304","hash":"0x01","payload":"` + payload + `"}`)
	allocs := testing.AllocsPerRun(1, func() {
		if _, err := DecodeMessageJSON(in); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 100 { // a few with the race detector on
		t.Errorf("%v allocations decoding one message", allocs)
	}
	var before, after runtimeMem
	before.read()
	m, err := DecodeMessageJSON(in)
	after.read()
	if err != nil || len(m.Payload) != MaxMessageBytes-65 {
		t.Fatal(err, len(m.Payload))
	}
	if grew := after.total - before.total; grew > uint64(len(m.Payload))+1<<20 {
		t.Errorf("decoding allocated %d bytes for a %d-byte payload", grew, len(m.Payload))
	}
}

type runtimeMem struct{ total uint64 }

func (r *runtimeMem) read() {
	var s runtime.MemStats
	runtime.ReadMemStats(&s)
	r.total = s.TotalAlloc
}
