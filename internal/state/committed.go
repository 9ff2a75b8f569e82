package state

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
)

// ErrCorruptObject marks a stored torrent or index that cannot be what the
// committed state says it is: fetching it again will not help.
var ErrCorruptObject = bus.Corrupt("stored object does not match the committed state")

// Committed is the torrent and index of a committed build, as stored.
type Committed struct {
	Torrent  []byte // the .torrent file
	MetaInfo *metainfo.MetaInfo
	Info     metainfo.Info
	Index    []byte
}

// FetchCommitted fetches the torrent and index that state st committed for
// community c and checks them against st and each other: the torrent's
// infohash, name and two files, and the index's length. The data is checked
// with Verify, once the caller has it.
func FetchCommitted(ctx context.Context, objs Objects, c string, st *Build) (*Committed, error) {
	index, err := readWhole(ctx, objs, ObjectIndex(c, st.InfoHash))
	if err != nil {
		return nil, fmt.Errorf("index object: %w", err)
	}
	torrent, err := readWhole(ctx, objs, ObjectTorrent(c, st.InfoHash))
	if err != nil {
		return nil, fmt.Errorf("torrent object: %w", err)
	}
	mi, err := metainfo.Load(bytes.NewReader(torrent))
	if err != nil {
		return nil, fmt.Errorf("%w: torrent object: %v", ErrCorruptObject, err)
	}
	info, err := mi.UnmarshalInfo()
	if err != nil {
		return nil, fmt.Errorf("%w: torrent object: %v", ErrCorruptObject, err)
	}
	if mi.HashInfoBytes().HexString() != st.InfoHash || info.Name != c || len(info.Files) != 2 {
		return nil, fmt.Errorf("%w: torrent object is not torrent %s of %s", ErrCorruptObject, st.InfoHash, c)
	}
	if int64(len(index)) != info.Files[1].Length {
		return nil, fmt.Errorf("%w: index object has %d bytes, torrent says %d", ErrCorruptObject, len(index), info.Files[1].Length)
	}
	return &Committed{Torrent: torrent, MetaInfo: mi, Info: info, Index: index}, nil
}

// Objects reads stored objects: *bus.Bus, whose reads create no consumer.
type Objects interface {
	ReadObject(ctx context.Context, name string, skip int64, w io.Writer, check func(*jetstream.ObjectInfo) error) (int64, error)
}

// readWhole reads an immutable object into memory. A repeat over a
// cluster's transient errors starts afresh and changes nothing; a missing
// object is not transient and fails at once.
func readWhole(ctx context.Context, objs Objects, name string) ([]byte, error) {
	return bus.RetryValue(ctx, func(ctx context.Context) ([]byte, error) {
		var b bytes.Buffer
		_, err := objs.ReadObject(ctx, name, 0, &b, nil)
		return b.Bytes(), err
	})
}

// DataBytes is the data file's length in the committed torrent.
func (cm *Committed) DataBytes() int64 { return cm.Info.Files[0].Length }

// Verify checks data, the data file from offset from (a piece boundary) to
// its end, followed by the index, against the torrent's piece hashes.
func (cm *Committed) Verify(from int64, data io.Reader) error {
	err := archive.VerifyPieces(cm.Info.Pieces, int(from/archive.PieceLength), io.MultiReader(data, bytes.NewReader(cm.Index)))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorruptObject, err)
	}
	return nil
}
