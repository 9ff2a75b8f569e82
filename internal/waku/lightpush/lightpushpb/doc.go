// Package lightpushpb is the code protoc-gen-go generates from
// light_push.proto (lightpush v3 is LightPushRequestV3 and
// LightPushResponseV3; the rest is the older 2.0.0-beta1 protocol) and the
// message.proto it imports (14/WAKU2-MESSAGE), both copied from
// waku-org/js-waku into internal/waku/proto, which regenerates it.
package lightpushpb
