// Package pb holds the protobuf wire types status-go members read: the archive,
// index and magnet-link messages and the hash-ratchet envelope.
package pb

//go:generate protoc --go_out=. --go_opt=paths=source_relative communities.proto protocol_message.proto
