// Package storepb is the code protoc-gen-go generates from storev3.proto
// (Store v3, copied from waku-org/go-waku) and the message.proto it
// imports (14/WAKU2-MESSAGE, copied from waku-org/waku-proto); both are in
// internal/waku/proto, which regenerates it.
package storepb
