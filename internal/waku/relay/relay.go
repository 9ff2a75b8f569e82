// Package relay is 11/WAKU2-RELAY on go-libp2p-pubsub: gossipsub with the
// parameters and peer scoring Waku nodes run (go-waku relay/config.go, nwaku
// waku_relay/protocol.nim), the relay message id, and the validator every
// joined pubsub topic has: a WakuMessage within the size limit and the
// clock gap nwaku enforces, from a peer within its rate. Joining topics and
// publishing is the node's (internal/waku/node).
package relay

import (
	"context"
	"crypto/sha256"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pubsubpb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Protocol is 11/WAKU2-RELAY's gossipsub protocol id, the only one a relay
// peer speaks (no /meshsub ids: Waku nodes do not accept them).
const Protocol = protocol.ID("/vac/waku/relay/2.0.0")

// NewGossipSub creates gossipsub on h configured as 11/WAKU2-RELAY, with
// go-waku's parameters and peer scoring (relay/config.go) on topics: a peer
// that sends data that is not a WakuMessage loses score (p4) and, far
// enough below zero, is no longer gossiped to, published to or listened
// to. extra options come after these.
func NewGossipSub(ctx context.Context, h host.Host, topics []string, extra ...pubsub.Option) (*pubsub.PubSub, error) {
	params := pubsub.DefaultGossipSubParams()
	params.D = 6
	params.Dlo = 4
	params.Dhi = 8
	// nwaku and go-waku set Dout=3, but go-libp2p-pubsub v0.19 requires
	// Dout < D/2 (gossipsub.go validate) and refuses 3 with D=6; 2 is its
	// default and the nearest allowed value. Dout only shapes our own mesh
	// maintenance (outbound quota), not the wire.
	params.Dout = 2
	params.Dlazy = 6
	params.HeartbeatInterval = time.Second
	params.HistoryLength = 6
	params.HistoryGossip = 3
	params.PruneBackoff = time.Minute
	params.UnsubscribeBackoff = 5 * time.Second
	params.GossipFactor = 0.25
	params.FanoutTTL = time.Minute
	opts := []pubsub.Option{
		pubsub.WithGossipSubParams(params),
		pubsub.WithGossipSubProtocols([]protocol.ID{Protocol}, func(f pubsub.GossipSubFeature, id protocol.ID) bool {
			// Waku relay is gossipsub v1.1: mesh and peer exchange.
			return id == Protocol && (f == pubsub.GossipSubFeatureMesh || f == pubsub.GossipSubFeaturePX)
		}),
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign),
		pubsub.WithNoAuthor(),
		pubsub.WithMessageIdFn(messageID),
		pubsub.WithFloodPublish(true),
		pubsub.WithSeenMessagesTTL(2 * time.Minute),
		pubsub.WithPeerScore(peerScoreParams(topics), peerScoreThresholds()),
		pubsub.WithPeerOutboundQueueSize(1024),
		pubsub.WithMaxMessageSize(MaxFrameSize),
	}
	return pubsub.NewGossipSub(ctx, h, append(opts, extra...)...)
}

// peerScoreParams are go-waku's (relay/config.go setDefaultPeerScoreParams
// and setDefaultTopicParams), the same topic parameters on every topic.
func peerScoreParams(topics []string) *pubsub.PeerScoreParams {
	tp := &pubsub.TopicScoreParams{
		TopicWeight:                  1,
		TimeInMeshWeight:             0.01,
		TimeInMeshQuantum:            time.Second,
		TimeInMeshCap:                10,
		FirstMessageDeliveriesWeight: 1,
		FirstMessageDeliveriesDecay:  0.5,
		FirstMessageDeliveriesCap:    10,
		// Invalid messages: -100 each, halving per decay interval.
		InvalidMessageDeliveriesWeight: -100,
		InvalidMessageDeliveriesDecay:  0.5,
	}
	ps := &pubsub.PeerScoreParams{
		Topics:                      map[string]*pubsub.TopicScoreParams{},
		AppSpecificScore:            func(peer.ID) float64 { return 0 },
		DecayInterval:               12 * time.Second,
		DecayToZero:                 0.01,
		RetainScore:                 10 * time.Minute,
		IPColocationFactorWeight:    -50,
		IPColocationFactorThreshold: 5,
		BehaviourPenaltyWeight:      -10,
		BehaviourPenaltyDecay:       0.986,
	}
	for _, t := range topics {
		ps.Topics[t] = tp
	}
	return ps
}

// peerScoreThresholds are go-waku's.
func peerScoreThresholds() *pubsub.PeerScoreThresholds {
	return &pubsub.PeerScoreThresholds{
		GossipThreshold:   -100,
		PublishThreshold:  -1000,
		GraylistThreshold: -10000,
	}
}

// messageID is the relay message id: SHA-256 of the data, raw bytes (it
// travels in IHAVE/IWANT, so it must match go-waku and nwaku).
func messageID(m *pubsubpb.Message) string {
	h := sha256.Sum256(m.Data)
	return string(h[:])
}
