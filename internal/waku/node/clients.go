package node

import (
	"context"

	"github.com/archivefleet/archivefleet/internal/waku/lightpush"
	"github.com/archivefleet/archivefleet/internal/waku/store"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
	"github.com/libp2p/go-libp2p/core/peer"
)

// The clients of the request-response protocols, from this node's host.

// LightPush asks a lightpush v3 service node to relay m on pubsubTopic (see
// lightpush.Client.Push).
func (n *Node) LightPush(ctx context.Context, service peer.AddrInfo, pubsubTopic string, m *wakuwire.Message) (lightpush.Result, error) {
	return lightpush.Client{Host: n.host}.Push(ctx, service, pubsubTopic, m)
}

// StoreQuery asks a Store v3 node for one page (see store.Client.Query).
func (n *Node) StoreQuery(ctx context.Context, node peer.AddrInfo, q store.Query) (store.Page, error) {
	return store.Client{Host: n.host}.Query(ctx, node, q)
}

// StoreQueryAll runs q page by page against a Store v3 node (see
// store.Client.QueryAll).
func (n *Node) StoreQueryAll(ctx context.Context, node peer.AddrInfo, q store.Query, page func(store.Page) error) (int, error) {
	return store.Client{Host: n.host}.QueryAll(ctx, node, q, page)
}
