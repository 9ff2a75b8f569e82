// Package recordpb is the MESSAGES stream's record format, generated from
// record.proto.
package recordpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative record.proto
