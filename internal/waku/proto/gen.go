// Package proto holds the Waku protocols' .proto definitions, copied verbatim
// from upstream (README.md says from where), and generates their Go code
// into the packages that use it: store/storepb (Store v3 and the WakuMessage
// it carries), lightpush/lightpushpb (lightpush v3) and metadata/metadatapb
// (66/WAKU2-METADATA). There is no Go code here besides the generator and
// the test that keeps the committed output in step with it.
//
// protoc comes from the system (Debian's protobuf-compiler); protoc-gen-go is
// the go.mod tool, at the module's google.golang.org/protobuf version.
// WAKU_PROTO_OUT, when set, is where the files go instead of the repository
// (the test regenerates into a temporary directory).
package proto

//go:generate sh -c "protoc --plugin=protoc-gen-go=$DOLLAR(go tool -n protoc-gen-go) --go_out=$DOLLAR{WAKU_PROTO_OUT:-../../..} --go_opt=module=github.com/archivefleet/archivefleet -I waku-proto -I go-waku --go_opt=Mwaku/message/v1/message.proto=github.com/archivefleet/archivefleet/internal/waku/store/storepb --go_opt=Mstorev3.proto=github.com/archivefleet/archivefleet/internal/waku/store/storepb waku/message/v1/message.proto storev3.proto"
//go:generate sh -c "protoc --plugin=protoc-gen-go=$DOLLAR(go tool -n protoc-gen-go) --go_out=$DOLLAR{WAKU_PROTO_OUT:-../../..} --go_opt=module=github.com/archivefleet/archivefleet -I js-waku --go_opt=Mmessage.proto=github.com/archivefleet/archivefleet/internal/waku/lightpush/lightpushpb --go_opt=Mlight_push.proto=github.com/archivefleet/archivefleet/internal/waku/lightpush/lightpushpb message.proto light_push.proto"
//go:generate sh -c "protoc --plugin=protoc-gen-go=$DOLLAR(go tool -n protoc-gen-go) --go_out=$DOLLAR{WAKU_PROTO_OUT:-../../..} --go_opt=module=github.com/archivefleet/archivefleet -I waku-proto --go_opt=Mwaku/metadata/v1/waku_metadata.proto=github.com/archivefleet/archivefleet/internal/waku/metadata/metadatapb waku/metadata/v1/waku_metadata.proto"
