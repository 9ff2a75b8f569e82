package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Placement buckets (see internal/placement).
const (
	// BucketSeeders holds one key per live seeder, rewritten by its
	// heartbeat; a seeder that stops rewriting it (killed, partitioned)
	// expires after SeederTTL, and the bucket's limit markers tell
	// watchers so.
	BucketSeeders = "seeders"
	// BucketServing holds "<community>.<seeder>" = the infohash that seeder
	// serves for the community. Entries of seeders no longer in
	// BucketSeeders are stale and ignored.
	BucketServing = "seeder-serving"
	// SeederTTL is how long a seeder stays a member after its last
	// heartbeat: how long its communities can be one copy short after it
	// dies.
	SeederTTL = 15 * time.Second
)

// SeederBuckets returns the placement buckets Setup opened; a Bus built
// without Setup (a test's) opens them, creating them if needed.
func (b *Bus) SeederBuckets(ctx context.Context) (members, serving jetstream.KeyValue, err error) {
	if b.Seeders != nil && b.Serving != nil {
		return b.Seeders, b.Serving, nil
	}
	storage := jetstream.FileStorage
	if b.Config.Memory {
		storage = jetstream.MemoryStorage
	}
	members, err = ensureKeyValue(ctx, b.JS, b.Config.Denials, jetstream.KeyValueConfig{Bucket: BucketSeeders, Storage: storage,
		Replicas: b.Config.Replicas, History: 1, TTL: SeederTTL, LimitMarkerTTL: SeederTTL})
	if err != nil {
		return nil, nil, fmt.Errorf("bucket %s: %w", BucketSeeders, err)
	}
	serving, err = ensureKeyValue(ctx, b.JS, b.Config.Denials, jetstream.KeyValueConfig{Bucket: BucketServing, Storage: storage,
		Replicas: b.Config.Replicas, History: 1})
	if err != nil {
		return nil, nil, fmt.Errorf("bucket %s: %w", BucketServing, err)
	}
	return members, serving, nil
}
