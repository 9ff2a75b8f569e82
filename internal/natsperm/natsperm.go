// Package natsperm is the fleet's NATS authorization layout: one user per
// process, each allowed only the subjects that process uses, and the
// nats-server configuration that says so.
//
// No service user may create or update a stream (one that can, can mirror
// or source any stream, the signing keys included) or a durable consumer:
// the admin sets the topology up (archivectl setup) and the services only
// read it. Each user receives replies on its own inbox prefix (natsconf's
// _INBOX_<user>) and may subscribe to no other. Only the announcer, which
// signs, and the admin may read the signing keys (bus.BucketCommunityKeys).
// Every other user is denied the bucket's read API and subjects outright,
// on top of the allow lists that already leave them out.
//
// The subjects follow what the services do through nats.go: a KV get is a
// direct get, $JS.API.DIRECT.GET.KV_<bucket>.$KV.<bucket>.<key>; a watch or
// a key listing is an ordered push consumer ($JS.API.CONSUMER.CREATE on the
// bucket's stream, flow-control replies on $JS.FC.KV_<bucket>.>); a put,
// create, update or delete publishes on $KV.<bucket>.<key>; an object read
// is a direct get of its meta and an ordered push consumer on its chunks,
// an object write publishes $O.<bucket>.C.<nuid> and $O.<bucket>.M.<name>
// and purges the chunks it replaces; a pull consumer's fetch is
// $JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer> and its acks (and naks,
// progress, terms) go to $JS.ACK.<stream>.<consumer>.>. The end-to-end
// test (internal/faulttest TestLeastPrivilege) runs every service under
// its user with the server logging each refusal, and fails on any.
package natsperm

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/natsconf"
	"github.com/archivefleet/archivefleet/internal/state"
)

// The fleet's NATS users.
const (
	Scheduler = "scheduler"
	Archiver  = "archiver" // also serves ingest and runs the message pruner
	Seeder    = "seeder"   // and its tracker
	Announcer = "announcer"
	Waku      = "waku"
	Prober    = "prober" // archivectl probe
	Console   = "console"
	// Ingest is a client's user: it may only send ingest requests.
	Ingest = "ingest"
	// Admin runs archivectl and the set-up: every subject.
	Admin = "admin"
)

// User is one NATS user and what it may do. Publish and Subscribe are
// allow lists (anything else is refused); the deny lists win over them.
type User struct {
	Name string
	// Runs says which processes use it.
	Runs             string
	Publish          []string
	Subscribe        []string
	DenyPublish      []string
	DenySubscribe    []string
	AllowResponses   bool // may answer requests it received (one reply each)
	ReadsSigningKeys bool
}

// InboxPrefix is the reply inbox prefix a user's processes use and the one
// it may subscribe to.
func InboxPrefix(user string) string { return natsconf.InboxPrefix(user) }

// perms accumulates a user's allow lists.
type perms struct{ pub, sub []string }

func (p *perms) publish(s ...string)   { p.pub = append(p.pub, s...) }
func (p *perms) subscribe(s ...string) { p.sub = append(p.sub, s...) }

// process is what every fleet process does on NATS: its own inbox, the
// account info its readiness check asks, and the topology reads of
// bus.Setup (stream and consumer info, which hold no message).
func (p *perms) process(user string) {
	p.subscribe(InboxPrefix(user) + ".>")
	p.publish("$JS.API.INFO", "$JS.API.STREAM.INFO.*", "$JS.API.CONSUMER.INFO.*.*")
}

// streamRead reads single messages of a stream (direct get, and the
// stream's own message get).
func (p *perms) streamRead(stream string) {
	p.publish("$JS.API.DIRECT.GET."+stream, "$JS.API.DIRECT.GET."+stream+".>", "$JS.API.STREAM.MSG.GET."+stream)
}

// streamConsume reads a stream with ordered consumers: pull (nats.go's
// jetstream OrderedConsumer) or push (KV watches, object reads, with flow
// control).
func (p *perms) streamConsume(stream string) {
	p.publish("$JS.API.CONSUMER.CREATE."+stream, "$JS.API.CONSUMER.CREATE."+stream+".>",
		"$JS.API.CONSUMER.MSG.NEXT."+stream+".*", "$JS.API.CONSUMER.DELETE."+stream+".*", "$JS.FC."+stream+".>")
}

func kvStream(bucket string) string { return "KV_" + bucket }

// kvGet reads keys of a bucket (all of them: a direct get names its key in
// the subject, keys lists them to allow fewer).
func (p *perms) kvGet(bucket string, keys ...string) {
	if len(keys) == 0 {
		p.streamRead(kvStream(bucket))
		return
	}
	for _, k := range keys {
		p.publish("$JS.API.DIRECT.GET." + kvStream(bucket) + ".$KV." + bucket + "." + k)
	}
}

// kvWatch watches or lists a bucket.
func (p *perms) kvWatch(bucket string) { p.streamConsume(kvStream(bucket)) }

// kvWrite puts, creates, updates and deletes the keys matching each of keys.
func (p *perms) kvWrite(bucket string, keys ...string) {
	for _, k := range keys {
		p.publish("$KV." + bucket + "." + k)
	}
}

const objStream = "OBJ_" + bus.BucketObjects

// objectsRead gets objects of the object store.
func (p *perms) objectsRead() {
	p.streamRead(objStream)
	p.streamConsume(objStream)
}

// objectsWrite puts and deletes objects (a put replacing an object, and a
// delete, purge its old chunks).
func (p *perms) objectsWrite() {
	p.publish("$O."+bus.BucketObjects+".C.>", "$O."+bus.BucketObjects+".M.>", "$JS.API.STREAM.PURGE."+objStream)
}

// work takes events from a durable consumer through bus.Work: fetch, acks,
// its failure counts (keys "<consumer>.<seq>") and its dead letters.
func (p *perms) work(stream, consumer, kind string) {
	p.publish("$JS.API.CONSUMER.MSG.NEXT."+stream+"."+consumer, "$JS.ACK."+stream+"."+consumer+".>", bus.SubjectDLQ(kind))
	p.kvGet(bus.BucketFailures, consumer+".*")
	p.kvWrite(bus.BucketFailures, consumer+".*")
}

// messagesRead reads the MESSAGES stream as the store does: batched
// direct gets by subject, and single records from the stream's leader (no
// consumer).
func (p *perms) messagesRead() {
	p.streamRead(bus.StreamMessages)
}

// ingest stores messages as store.Store does: the community and its state
// read, records published on their day's buckets (the buckets read to find
// what they hold), a large payload put in the object store, a conflicting
// record kept aside.
func (p *perms) ingest() {
	p.kvGet(bus.BucketCommunities)
	p.kvGet(bus.BucketState, "*")
	p.publish("msgs.>", bus.SubjectConflict("*", "*"))
	p.messagesRead()
	p.objectsWrite()
}

// signingKeysDenied is what every user but the announcer and the admin is
// refused on the signing-keys bucket: any read of its stream, a consumer on
// it, its subjects.
func signingKeysDenied() (pub, sub []string) {
	s := kvStream(bus.BucketCommunityKeys)
	pub = []string{
		"$JS.API.DIRECT.GET." + s, "$JS.API.DIRECT.GET." + s + ".>", "$JS.API.STREAM.MSG.GET." + s,
		"$JS.API.CONSUMER.CREATE." + s, "$JS.API.CONSUMER.CREATE." + s + ".>", "$JS.API.CONSUMER.DURABLE.CREATE." + s + ".>",
		"$JS.API.CONSUMER.MSG.NEXT." + s + ".>", "$KV." + bus.BucketCommunityKeys + ".>",
	}
	return pub, []string{"$KV." + bus.BucketCommunityKeys + ".>"}
}

// serviceDenied is what no user but the admin may do, whatever its allow
// list says: change the topology (a stream created or updated can mirror
// or source any other), delete streams or consumers of the fleet, manage
// the account or the servers, listen to JetStream's advisories or the
// system account.
var serviceDenied = struct{ pub, sub []string }{
	pub: []string{"$JS.API.STREAM.CREATE.>", "$JS.API.STREAM.UPDATE.>", "$JS.API.STREAM.DELETE.>",
		"$JS.API.CONSUMER.DURABLE.CREATE.>", "$JS.API.STREAM.SNAPSHOT.>", "$JS.API.STREAM.RESTORE.>",
		"$JS.API.STREAM.LEADER.>", "$JS.API.STREAM.PEER.>", "$JS.API.CONSUMER.LEADER.>", "$JS.API.META.>",
		"$JS.API.ACCOUNT.>", "$JS.API.SERVER.>", "$SYS.>"},
	sub: []string{"$JS.EVENT.>", "$JS.API.>", "$SYS.>"},
}

// Users returns every user of the fleet, the admin last.
func Users() []User {
	var out []User
	add := func(name, runs string, p perms, responses, keys bool) {
		u := User{Name: name, Runs: runs, Publish: dedup(p.pub), Subscribe: dedup(p.sub), AllowResponses: responses, ReadsSigningKeys: keys,
			DenyPublish: slices.Clone(serviceDenied.pub), DenySubscribe: slices.Clone(serviceDenied.sub)}
		if !keys {
			pub, sub := signingKeysDenied()
			u.DenyPublish, u.DenySubscribe = append(u.DenyPublish, pub...), append(u.DenySubscribe, sub...)
		}
		out = append(out, u)
	}

	var sched perms
	sched.process(Scheduler)
	sched.kvWatch(bus.BucketCommunities)
	sched.kvWatch(bus.BucketState)
	sched.publish(bus.SubjectDue("*"), bus.SubjectRepublish("*"))
	add(Scheduler, "cmd/scheduler", sched, false, false)

	var arch perms
	arch.process(Archiver)
	arch.work(bus.StreamDue, bus.ConsumerArchiver, "due")
	arch.kvGet(bus.BucketCommunities)
	arch.kvGet(bus.BucketState, "*")
	arch.kvWrite(bus.BucketState, "*") // the committed build, <c>
	arch.objectsRead()
	arch.objectsWrite()
	arch.ingest()
	arch.publish(bus.SubjectBuilt("*"))
	// Ingest requests (HTTP too, served from the same store), queue group
	// "ingest"; the replies go to the requester's inbox (AllowResponses).
	arch.subscribe(bus.SubjectIngest("*"))
	// The message pruner.
	arch.work(bus.StreamBuilt, bus.ConsumerPruner, "prune")
	arch.work(bus.StreamPrune, bus.ConsumerPruner, "prune")
	arch.publish(bus.SubjectPruneSchedule("*"), "$JS.API.STREAM.PURGE."+bus.StreamMessages, "$JS.API.STREAM.MSG.DELETE."+bus.StreamMessages)
	add(Archiver, "cmd/archiver: builds, message ingest (HTTP and archive.ingest.<c>), the message pruner", arch, true, false)

	var seed perms
	seed.process(Seeder)
	seed.kvWatch(bus.BucketState)
	seed.kvGet(bus.BucketState, "*")
	seed.kvWatch(bus.BucketCommunities)
	seed.kvGet(bus.BucketCommunities)
	seed.objectsRead()
	seed.kvWatch(bus.BucketSeeders)
	seed.kvGet(bus.BucketSeeders)
	seed.kvWrite(bus.BucketSeeders, "*")
	seed.kvWatch(bus.BucketServing)
	seed.kvGet(bus.BucketServing)
	seed.kvWrite(bus.BucketServing, "*.*")
	seed.kvWatch(bus.BucketTrackerPeers)
	seed.kvGet(bus.BucketTrackerPeers)
	seed.kvWrite(bus.BucketTrackerPeers, "*.*")
	seed.publish(bus.SubjectSeeding("*"))
	add(Seeder, "cmd/seeder and its tracker", seed, false, false)

	var ann perms
	ann.process(Announcer)
	ann.work(bus.StreamSeeding, bus.ConsumerAnnouncer, "announce")
	ann.kvGet(bus.BucketCommunities)
	ann.kvGet(bus.BucketCommunityKeys)
	ann.kvGet(bus.BucketState, "*", state.AnnounceKey("*"))
	ann.kvWrite(bus.BucketState, state.AnnounceKey("*"))
	ann.kvWatch(bus.BucketSeeders)
	ann.kvGet(bus.BucketSeeders)
	ann.publish(bus.SubjectAnnounced("*"))
	add(Announcer, "cmd/announcer: the one service that reads the signing keys", ann, false, true)

	var waku perms
	waku.process(Waku)
	waku.work(bus.StreamAnnounced, bus.ConsumerWaku, "waku")
	waku.kvWatch(bus.BucketCommunities)
	waku.kvGet(bus.BucketState, state.WakuKey("*"), state.BackfillKey("*"))
	waku.kvWrite(bus.BucketState, state.WakuKey("*"), state.BackfillKey("*"))
	waku.ingest() // what the edge hears is archived
	add(Waku, "cmd/waku (the Waku edge)", waku, false, false)

	var prober perms
	prober.process(Prober)
	prober.kvWatch(bus.BucketCommunities) // the list of communities
	prober.kvGet(bus.BucketCommunities)
	prober.kvGet(bus.BucketState, state.AnnounceKey("*"))
	add(Prober, "archivectl probe", prober, false, false)

	var con perms
	con.process(Console)
	con.kvWatch(bus.BucketCommunities) // the list
	con.kvGet(bus.BucketCommunities)
	con.kvWrite(bus.BucketCommunities, "*") // enable, disable
	con.kvGet(bus.BucketState)              // build, announce and Waku states
	con.kvWatch(bus.BucketSeeders)
	con.kvGet(bus.BucketSeeders)
	con.kvWatch(bus.BucketServing)
	con.kvGet(bus.BucketServing)
	con.streamRead(bus.StreamDLQ)
	con.publish("$JS.API.STREAM.MSG.DELETE." + bus.StreamDLQ) // requeue, discard
	// Trigger, and a dead letter requeued on the subject it came from.
	con.publish(bus.SubjectDue("*"), bus.SubjectSeeding("*"), bus.SubjectRepublish("*"), bus.SubjectAnnounced("*"),
		bus.SubjectBuilt("*"), bus.SubjectPruneDue("*"))
	add(Console, "cmd/console (the operator console: trigger, enable/disable, requeue/discard dead letters)", con, false, false)

	var in perms
	in.subscribe(InboxPrefix(Ingest) + ".>")
	in.publish(bus.SubjectIngest("*"))
	add(Ingest, "clients sending messages over NATS (archive.ingest.<c> requests, inbox prefix "+InboxPrefix(Ingest)+")", in, false, false)

	out = append(out, User{Name: Admin, Runs: "archivectl (setup, community add …), the operator", Publish: []string{">"},
		Subscribe: []string{">"}, ReadsSigningKeys: true})
	return out
}

// Lookup returns the user named name.
func Lookup(name string) (User, bool) {
	for _, u := range Users() {
		if u.Name == name {
			return u, true
		}
	}
	return User{}, false
}

func dedup(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

// Authorization renders the nats-server authorization block for the users,
// each with its password hash (bcrypt, as nats-server takes it) from
// hashes, which must hold every user.
func Authorization(users []User, hashes map[string]string) (string, error) {
	var b strings.Builder
	b.WriteString("# The fleet's NATS users, one per process, each allowed only what it uses\n" +
		"# (internal/natsperm; archivectl deploy-secrets writes this file). Deny wins over allow.\n" +
		"authorization {\n  users: [\n")
	for _, u := range users {
		h, ok := hashes[u.Name]
		if !ok || !strings.HasPrefix(h, "$2") {
			return "", fmt.Errorf("natsperm: no bcrypt hash for user %s", u.Name)
		}
		fmt.Fprintf(&b, "    # %s\n    {\n      user: %s\n      password: %s\n      permissions: {\n", u.Runs, strconv.Quote(u.Name), strconv.Quote(h))
		section := func(name string, allow, deny []string) {
			fmt.Fprintf(&b, "        %s: {\n", name)
			list := func(key string, subjects []string) {
				if len(subjects) == 0 {
					return
				}
				fmt.Fprintf(&b, "          %s: [\n", key)
				for _, s := range subjects {
					fmt.Fprintf(&b, "            %s\n", strconv.Quote(s))
				}
				b.WriteString("          ]\n")
			}
			list("allow", allow)
			list("deny", deny)
			b.WriteString("        }\n")
		}
		section("publish", u.Publish, u.DenyPublish)
		section("subscribe", u.Subscribe, u.DenySubscribe)
		if u.AllowResponses {
			b.WriteString("        allow_responses: true\n")
		}
		b.WriteString("      }\n    }\n")
	}
	b.WriteString("  ]\n}\n")
	return b.String(), nil
}
