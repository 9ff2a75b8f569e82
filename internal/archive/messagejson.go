package archive

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// parseMessageJSON decodes one JSON object into a Message with the rules of
// encoding/json and DisallowUnknownFields (field names matched without
// regard to case, null leaves a field alone, the last of repeated fields
// wins), but without encoding/json's copies: a hex string is decoded
// straight from b. A message at the 30,000,000-byte cap is 60 MB of hex;
// encoding/json would hold the input two or three times over (the
// decoder's buffer, the unquoted string, its conversion) before the bytes.
// Here the cost is b plus the decoded fields.
func parseMessageJSON(b []byte) (Message, error) {
	var m Message
	p := jsonParser{b: b}
	p.space()
	if !p.expect('{') {
		return m, p.syntax("looking for beginning of object")
	}
	p.space()
	if p.peek() == '}' {
		p.i++
	} else {
		for {
			p.space()
			ks, ke, esc, err := p.str()
			if err != nil {
				return m, err
			}
			key := string(b[ks:ke])
			if esc {
				if err := json.Unmarshal(b[ks-1:ke+1], &key); err != nil {
					return m, err
				}
			}
			p.space()
			if !p.expect(':') {
				return m, p.syntax("after object key")
			}
			p.space()
			if err := p.field(&m, key); err != nil {
				return m, err
			}
			p.space()
			if p.expect(',') {
				continue
			}
			if p.expect('}') {
				break
			}
			return m, p.syntax("after object key:value pair")
		}
	}
	p.space()
	if p.i != len(b) {
		return m, errors.New("trailing data after the JSON object")
	}
	return m, nil
}

type jsonParser struct {
	b []byte
	i int
}

func (p *jsonParser) peek() byte {
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

func (p *jsonParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonParser) expect(c byte) bool {
	if p.peek() == c && p.i < len(p.b) {
		p.i++
		return true
	}
	return false
}

func (p *jsonParser) syntax(context string) error {
	if p.i >= len(p.b) {
		return errors.New("unexpected end of JSON input")
	}
	return fmt.Errorf("invalid character %s %s", quoteChar(p.b[p.i]), context)
}

func quoteChar(c byte) string {
	if c == '\'' {
		return `'\''`
	}
	if c == '"' {
		return `'"'`
	}
	s := strconv.Quote(string(rune(c)))
	return "'" + s[1:len(s)-1] + "'"
}

// str scans a string at p.i and returns the bounds of its content, whether
// it holds escapes, and moves past it.
func (p *jsonParser) str() (start, end int, escaped bool, err error) {
	if !p.expect('"') {
		return 0, 0, false, p.syntax("looking for beginning of object key string")
	}
	start = p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			end = p.i
			p.i++
			return start, end, escaped, nil
		case c == '\\':
			escaped = true
			p.i += 2
		case c < 0x20:
			return 0, 0, false, fmt.Errorf("invalid character %s in string literal", quoteChar(c))
		default:
			p.i++
		}
	}
	return 0, 0, false, errors.New("unexpected end of JSON input")
}

// value scans any JSON value and returns its bytes (for the rare values
// decoded with encoding/json: numbers, escaped strings, wrong types).
func (p *jsonParser) value() ([]byte, error) {
	start := p.i
	switch c := p.peek(); {
	case c == '"':
		if _, _, _, err := p.str(); err != nil {
			return nil, err
		}
	case c == '{' || c == '[':
		depth := 0
		for p.i < len(p.b) {
			switch p.b[p.i] {
			case '"':
				if _, _, _, err := p.str(); err != nil {
					return nil, err
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
			p.i++
			if depth == 0 {
				return p.b[start:p.i], nil
			}
		}
		return nil, errors.New("unexpected end of JSON input")
	default:
		for p.i < len(p.b) && strings.IndexByte(" \t\r\n,}]", p.b[p.i]) < 0 {
			p.i++
		}
		if p.i == start {
			return nil, p.syntax("looking for beginning of value")
		}
	}
	return p.b[start:p.i], nil
}

func (p *jsonParser) isNull() bool {
	if len(p.b)-p.i >= 4 && string(p.b[p.i:p.i+4]) == "null" {
		p.i += 4
		return true
	}
	return false
}

// field decodes the value at p.i into the field of m named key.
func (p *jsonParser) field(m *Message, key string) error {
	var hexField *HexBytes
	switch {
	case strings.EqualFold(key, "sig"):
		hexField = &m.Sig
	case strings.EqualFold(key, "payload"):
		hexField = &m.Payload
	case strings.EqualFold(key, "padding"):
		hexField = &m.Padding
	case strings.EqualFold(key, "hash"):
		hexField = &m.Hash
	case strings.EqualFold(key, "topic"):
		if p.isNull() {
			return nil
		}
		v, err := p.value()
		if err != nil {
			return err
		}
		return json.Unmarshal(v, &m.Topic)
	case strings.EqualFold(key, "timestamp"):
		if p.isNull() {
			return nil
		}
		v, err := p.value()
		if err != nil {
			return err
		}
		return json.Unmarshal(v, &m.Timestamp)
	case strings.EqualFold(key, "thirdPartyId"):
		if p.isNull() {
			return nil
		}
		v, err := p.value()
		if err != nil {
			return err
		}
		return json.Unmarshal(v, &m.ThirdPartyID)
	default:
		if _, err := p.value(); err != nil {
			return err
		}
		return fmt.Errorf("json: unknown field %q", key)
	}
	if p.isNull() {
		*hexField = nil
		return nil
	}
	if p.peek() != '"' {
		v, err := p.value()
		if err != nil {
			return err
		}
		return json.Unmarshal(v, hexField) // the type error encoding/json gives
	}
	start, end, esc, err := p.str()
	if err != nil {
		return err
	}
	s := p.b[start:end]
	if esc || !utf8.Valid(s) {
		var str string
		if err := json.Unmarshal(p.b[start-1:end+1], &str); err != nil {
			return err
		}
		s = []byte(str)
	}
	return hexField.UnmarshalText(s)
}

// decodeHexBytes decodes hex with an optional "0x" prefix into a new slice.
func decodeHexBytes(b []byte) ([]byte, error) {
	// As strings.TrimPrefix twice, the way decodeHex reads a string.
	if len(b) >= 2 && b[0] == '0' && b[1] == 'x' {
		b = b[2:]
	}
	if len(b) >= 2 && b[0] == '0' && b[1] == 'X' {
		b = b[2:]
	}
	out := make([]byte, hex.DecodedLen(len(b)))
	n, err := hex.Decode(out, b)
	if err != nil {
		return nil, err
	}
	return out[:n], nil
}
