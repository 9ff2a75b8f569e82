package bus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// SetupMetadataKey is the stream, consumer and bucket metadata key under
// which Setup records a fingerprint of the configuration it asked for.
//
// Setup runs at every service start, and a create-or-update request is an
// update even when nothing changed: the server rewrites the stream's
// metadata file, sends an advisory, and, in nats-server 2.15.2, writes the
// file store's configuration while a consumer being created on the same
// stream reads it unlocked (a data race the race detector reports:
// fileStore.UpdateConfig against fileStore.ConsumerStore). Every service's
// store reads create consumers on MESSAGES all the time, so a service
// restarting in a running fleet raced them. With the fingerprint, Setup
// only reads what is there and leaves it alone unless its own
// configuration changed (an upgrade, or new settings). A change made by
// hand (nats CLI) to an object whose fingerprint still matches is kept.
const SetupMetadataKey = "archivefleet.setup"

// setupLookupTimeout bounds Setup's read of an existing object. A cluster
// without a meta leader (forming, or electing) does not answer a stream
// info request at all, where it answers a create or update with an error;
// a lookup cut short goes on to the create-or-update.
const setupLookupTimeout = 2 * time.Second

// fingerprint identifies a configuration Setup asks for.
func fingerprint(cfg any) string {
	b, err := json.Marshal(cfg)
	if err != nil {
		return "" // never matches: the object is updated as before
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:12])
}

// ensure returns the object lookup finds when its metadata carries want's
// fingerprint, else the result of apply (a create-or-update) given want's
// metadata with the fingerprint added. A failed lookup (not found, no
// answer within setupLookupTimeout, or any other error) goes to apply,
// which reports what is wrong; an apply the server refuses this user (see
// Denials) fails with ErrTopologyDenied.
func ensure[T any](ctx context.Context, denials *Denials, want any, metadata map[string]string,
	lookup func(context.Context) (T, map[string]string, error),
	apply func(context.Context, map[string]string) (T, error)) (T, error) {
	fp := fingerprint(want)
	lctx, cancel := context.WithTimeout(ctx, setupLookupTimeout)
	v, have, err := lookup(lctx)
	cancel()
	if err == nil && fp != "" && have[SetupMetadataKey] == fp {
		return v, nil
	}
	md := maps.Clone(metadata)
	if md == nil {
		md = map[string]string{}
	}
	md[SetupMetadataKey] = fp
	actx, refused := denials.guard(ctx)
	v, err = apply(actx, md)
	if denied := refused(); denied != nil {
		var zero T
		return zero, denied
	}
	return v, err
}

// ensureStream creates stream cfg, or updates it when Setup last asked for
// another configuration.
func ensureStream(ctx context.Context, js jetstream.JetStream, denials *Denials, cfg jetstream.StreamConfig) error {
	_, err := ensure(ctx, denials, cfg, cfg.Metadata,
		func(ctx context.Context) (jetstream.Stream, map[string]string, error) {
			s, err := js.Stream(ctx, cfg.Name)
			if err != nil {
				return nil, nil, err
			}
			return s, s.CachedInfo().Config.Metadata, nil
		},
		func(ctx context.Context, md map[string]string) (jetstream.Stream, error) {
			cfg.Metadata = md
			return js.CreateOrUpdateStream(ctx, cfg)
		})
	return err
}

// ensureConsumer creates durable consumer cfg on stream, or updates it when
// Setup last asked for another configuration.
func ensureConsumer(ctx context.Context, js jetstream.JetStream, denials *Denials, stream string, cfg jetstream.ConsumerConfig) error {
	_, err := ensure(ctx, denials, struct {
		Stream string
		Config jetstream.ConsumerConfig
	}{stream, cfg}, cfg.Metadata,
		func(ctx context.Context) (jetstream.Consumer, map[string]string, error) {
			c, err := js.Consumer(ctx, stream, cfg.Durable)
			if err != nil {
				return nil, nil, err
			}
			return c, c.CachedInfo().Config.Metadata, nil
		},
		func(ctx context.Context, md map[string]string) (jetstream.Consumer, error) {
			cfg.Metadata = md
			return js.CreateOrUpdateConsumer(ctx, stream, cfg)
		})
	return err
}

// ensureKeyValue opens bucket cfg, creating it, or updating it when Setup
// last asked for another configuration.
func ensureKeyValue(ctx context.Context, js jetstream.JetStream, denials *Denials, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return ensure(ctx, denials, cfg, cfg.Metadata,
		func(ctx context.Context) (jetstream.KeyValue, map[string]string, error) {
			kv, err := js.KeyValue(ctx, cfg.Bucket)
			if err != nil {
				return nil, nil, err
			}
			st, err := kv.Status(ctx)
			if err != nil {
				return nil, nil, err
			}
			return kv, st.Metadata(), nil
		},
		func(ctx context.Context, md map[string]string) (jetstream.KeyValue, error) {
			cfg.Metadata = md
			return js.CreateOrUpdateKeyValue(ctx, cfg)
		})
}

// ensureObjectStore opens object store cfg, creating it, or updating it
// when Setup last asked for another configuration.
func ensureObjectStore(ctx context.Context, js jetstream.JetStream, denials *Denials, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	return ensure(ctx, denials, cfg, cfg.Metadata,
		func(ctx context.Context) (jetstream.ObjectStore, map[string]string, error) {
			obs, err := js.ObjectStore(ctx, cfg.Bucket)
			if err != nil {
				return nil, nil, err
			}
			st, err := obs.Status(ctx)
			if err != nil {
				return nil, nil, err
			}
			return obs, st.Metadata(), nil
		},
		func(ctx context.Context, md map[string]string) (jetstream.ObjectStore, error) {
			cfg.Metadata = md
			return js.CreateOrUpdateObjectStore(ctx, cfg)
		})
}
