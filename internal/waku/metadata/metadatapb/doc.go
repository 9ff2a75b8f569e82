// Package metadatapb is the code protoc-gen-go generates from
// waku_metadata.proto (66/WAKU2-METADATA), copied from waku-org/waku-proto
// into internal/waku/proto, which regenerates it.
package metadatapb
