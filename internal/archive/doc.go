// Package archive builds and reads status-go community history archives.
//
// The producer side (Build) packs a community's stored Waku messages into
// WakuMessageArchive protobufs, appends them piece-aligned to the community's
// append-only data file, rewrites its index atomically and writes the BitTorrent
// v1 metainfo and magnet link, exactly as status-go's createHistoryArchiveTorrent
// lays them out, so that a status-go member can download and import them.
// The member side (DecodeIndex, ReadArchive) opens an index, lists archives with
// their piece ranges and reads the messages of one archive, treating every byte
// as hostile input.
//
// The package knows nothing about NATS, Redis or where messages are stored: the
// caller supplies a Source and, for token-gated communities, an Encrypter and a
// Decrypter.
package archive
