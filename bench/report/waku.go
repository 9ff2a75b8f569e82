package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// wakuCond is one condition ("quiet" or "load") of bench/waku's output:
// every figure's median under its own key, its spread under key_min and
// key_max, and the rounds themselves.
type wakuCond struct {
	stat   map[string]float64
	rounds []map[string]float64
}

// wakuResults is bench/waku's JSON.
type wakuResults struct {
	messages, rounds, payload, burners int
	quiet, load                        *wakuCond
}

func parseWaku(raw []byte) (*wakuResults, error) {
	var top struct {
		Messages int             `json:"messages_per_measurement"`
		Rounds   int             `json:"rounds"`
		Payload  int             `json:"payload_bytes"`
		Burners  int             `json:"burners"`
		Quiet    json.RawMessage `json:"quiet"`
		Load     json.RawMessage `json:"load"`
	}
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, err
	}
	cond := func(raw json.RawMessage) (*wakuCond, error) {
		if len(raw) == 0 {
			return nil, nil
		}
		var all map[string]any
		if err := json.Unmarshal(raw, &all); err != nil {
			return nil, err
		}
		var rs struct {
			Rounds []map[string]float64 `json:"rounds"`
		}
		if err := json.Unmarshal(raw, &rs); err != nil {
			return nil, err
		}
		if len(rs.Rounds) == 0 {
			return nil, errors.New("no rounds")
		}
		c := &wakuCond{stat: map[string]float64{}, rounds: rs.Rounds}
		for k, v := range all {
			if f, ok := v.(float64); ok {
				c.stat[k] = f
			}
		}
		return c, nil
	}
	w := &wakuResults{messages: top.Messages, rounds: top.Rounds, payload: top.Payload, burners: top.Burners}
	var err error
	if w.quiet, err = cond(top.Quiet); err != nil {
		return nil, fmt.Errorf("quiet: %w", err)
	}
	if w.quiet == nil {
		return nil, errors.New("no quiet figures")
	}
	if w.load, err = cond(top.Load); err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	return w, nil
}

// get is the median, min and max of key over the rounds.
func (c *wakuCond) get(key string) (med, lo, hi float64) {
	return c.stat[key], c.stat[key+"_min"], c.stat[key+"_max"]
}

// ratio is the median, min and max over the rounds of num/den, each
// round's own.
func (c *wakuCond) ratio(num, den string) (med, lo, hi float64) {
	v := make([]float64, len(c.rounds))
	for i, r := range c.rounds {
		v[i] = r[num] / r[den]
	}
	slices.Sort(v)
	med = v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return med, v[0], v[len(v)-1]
}

// backfillRun is one sub-benchmark of BenchmarkStoreBackfill.
type backfillRun struct {
	topics int
	cond   string // "quiet" or "load=N"
	m      map[string]float64
}

// backfillRuns picks BenchmarkStoreBackfill/topics=N/cond out of parsed
// `go test -bench` output, fewest topics first, quiet before load.
func backfillRuns(bench map[string]map[string]float64) []backfillRun {
	var out []backfillRun
	for name, m := range bench {
		parts := strings.Split(name, "/")
		if len(parts) != 3 || parts[0] != "BenchmarkStoreBackfill" || !strings.HasPrefix(parts[1], "topics=") {
			continue
		}
		n, err := strconv.Atoi(strings.TrimPrefix(parts[1], "topics="))
		if err != nil {
			continue
		}
		out = append(out, backfillRun{n, parts[2], m})
	}
	slices.SortFunc(out, func(a, b backfillRun) int {
		if a.topics != b.topics {
			return a.topics - b.topics
		}
		if (a.cond == "quiet") != (b.cond == "quiet") {
			if a.cond == "quiet" {
				return -1
			}
			return 1
		}
		return strings.Compare(a.cond, b.cond)
	})
	return out
}

// sig formats v with about three significant digits.
func sig(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

// wakuSection reads waku.json and backfill.txt from dir and renders the
// "Waku receive and back-fill" section, starting with a blank line. It is
// empty when either file is absent (results made before these benchmarks).
func wakuSection(dir string) string {
	wp, bp := filepath.Join(dir, "waku.json"), filepath.Join(dir, "backfill.txt")
	var missing []string
	for _, p := range []string{wp, bp} {
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, filepath.Base(p))
		} else if err != nil {
			log.Fatal(err)
		}
	}
	if len(missing) > 0 {
		log.Printf("no %s in %s: leaving out the Waku section", strings.Join(missing, " or "), dir)
		return ""
	}
	raw, err := os.ReadFile(wp)
	if err != nil {
		log.Fatal(err)
	}
	w, err := parseWaku(raw)
	if err != nil {
		log.Fatalf("%s: %v", wp, err)
	}
	bf := backfillRuns(benchLines(bp))
	if len(bf) == 0 {
		log.Fatalf("%s: no BenchmarkStoreBackfill results", bp)
	}
	return renderWaku(w, bf)
}

// renderWaku renders the section from parsed results.
func renderWaku(w *wakuResults, bf []backfillRun) string {
	var sb strings.Builder
	conds := []*wakuCond{w.quiet}
	head := "| measure | quiet | over the rounds |"
	rule := "|---|---|---|"
	if w.load != nil {
		conds = append(conds, w.load)
		head += fmt.Sprintf(" under load (%d burners) | over the rounds |", w.burners)
		rule += "---|---|"
	}
	// row writes one table row: for each condition, cell formats the
	// median, spread the min–max (empty: no spread shown).
	row := func(label string, val func(c *wakuCond) (med, lo, hi float64), cell func(c *wakuCond, med float64) string, spread func(lo, hi float64) string) {
		fmt.Fprintf(&sb, "| %s |", label)
		for _, c := range conds {
			med, lo, hi := val(c)
			fmt.Fprintf(&sb, " %s | %s |", cell(c, med), spread(lo, hi))
		}
		sb.WriteString("\n")
	}
	key := func(k string) func(c *wakuCond) (float64, float64, float64) {
		return func(c *wakuCond) (float64, float64, float64) { return c.get(k) }
	}
	ratio := func(num, den string) func(c *wakuCond) (float64, float64, float64) {
		return func(c *wakuCond) (float64, float64, float64) { return c.ratio(num, den) }
	}
	unit := func(u string) func(c *wakuCond, med float64) string {
		return func(_ *wakuCond, med float64) string { return sig(med) + " " + u }
	}
	units := func(u string) func(lo, hi float64) string {
		if strings.HasPrefix(u, "/") {
			return func(lo, hi float64) string { return sig(lo) + "–" + sig(hi) + u }
		}
		return func(lo, hi float64) string { return sig(lo) + "–" + sig(hi) + " " + u }
	}
	times := func(_ *wakuCond, med float64) string { return fmt.Sprintf("**%.2fx**", med) }
	timesSpread := func(lo, hi float64) string { return fmt.Sprintf("%.2f–%.2fx", lo, hi) }

	fmt.Fprintf(&sb, "\n## Waku receive and back-fill\n\nMedians of %d rounds of %d Status chat messages each (rfc26 payload %d bytes), every figure interleaved with its reference in the same round; each round quiet", w.rounds, w.messages, w.payload)
	if w.load != nil {
		fmt.Fprintf(&sb, ", then again with %d CPU burner processes on the machine", w.burners)
	}
	fmt.Fprintf(&sb, ". Ratios are of times: above 1x is slower than the reference.\n\n%s\n%s\n", head, rule)
	row("`wakuedge.Record` on one core: rfc26 open with the chat key, signer recovery, message hash", key("record_us"),
		func(c *wakuCond, med float64) string {
			return fmt.Sprintf("%s µs a message, %.0f/s", sig(med), c.stat["record_msgs_per_s"])
		}, units("µs"))
	row("its crypto floor: AES-256-GCM open (AEAD built once), Keccak-256, decred secp256k1 `RecoverCompact`, SHA-256 message hash, nothing else", key("crypto_floor_us"), unit("µs"), units("µs"))
	row("Record over its crypto floor", key("record_over_crypto_floor"), times, timesSpread)
	row("of which decred's secp256k1 recovery", key("recover_us"),
		func(c *wakuCond, med float64) string {
			share, _, _ := c.ratio("recover_us", "record_us")
			return fmt.Sprintf("%s µs (%.0f%% of Record)", sig(med), share*100)
		}, units("µs"))
	row("of which AES-256-GCM open", key("gcm_open_us"), unit("µs"), units("µs"))
	row("the same recovery by libsecp256k1 (go-ethereum `crypto.Ecrecover`, cgo, as status-go does it)", key("recover_libsecp256k1_us"), unit("µs"), units("µs"))
	row("decred's recovery over libsecp256k1's", ratio("recover_us", "recover_libsecp256k1_us"), times, timesSpread)
	row("`store.Ingest` of the records in batches of 1000 into JetStream (file storage)", key("ingest_msgs_per_s"), unit("messages/s"), units("/s"))
	row("JetStream floor: the same records published asynchronously with the same dedup, 1000 in flight, nothing else", key("jetstream_floor_msgs_per_s"), unit("messages/s"), units("/s"))
	row("Ingest over the JetStream floor", key("ingest_over_jetstream_floor"), times, timesSpread)
	row("the receiver's pipeline: Record, queue, flush to Ingest (all cores)", key("pipeline_msgs_per_s"), unit("messages/s"), units("/s"))
	row("pipeline over Record alone on one core", key("pipeline_over_record_1core"), times, timesSpread)
	q := w.quiet
	share, _, _ := q.ratio("recover_us", "record_us")
	lib, _, _ := q.ratio("recover_us", "recover_libsecp256k1_us")
	rec, _, _ := q.get("record_over_crypto_floor")
	recLoad := ""
	if w.load != nil {
		r, _, _ := w.load.get("record_over_crypto_floor")
		recLoad = fmt.Sprintf(" and %.2fx under load", r)
	}
	ing, _, _ := q.get("ingest_over_jetstream_floor")
	pipe, _, _ := q.get("pipeline_over_record_1core")
	fmt.Fprintf(&sb, "\nThe crypto floor is the work no implementation of Record can skip, done as bare as Go allows: Record takes %.2fx its time quiet%s, and %.0f%% of Record's time is decred's secp256k1 signer recovery, which libsecp256k1 would do %.1fx faster. "+
		"Ingest takes %.2fx a bare JetStream publish of the same records, and the receiver's pipeline (Ingest on the other core) %.2fx Record alone on one core.\n\n",
		rec, recLoad, share*100, lib, ing, pipe)

	fmt.Fprintf(&sb, "Chat keys (status-go's PBKDF2, slow by design), against the edge's key cache:\n\n%s\n%s\n", head, rule)
	row("`wakuwire.ChatKey`: PBKDF2-HMAC-SHA256, 65356 iterations", key("chatkey_derive_ms"), unit("ms"), units("ms"))
	ns := func(_ *wakuCond, med float64) string { return fmt.Sprintf("%.0f ns", med) }
	row("cached look-up (a copy of the edge's key cache: mutex, map, hit counter)", key("chatkey_lookup_ns"), ns, func(lo, hi float64) string { return fmt.Sprintf("%.0f–%.0f ns", lo, hi) })
	row("one derivation over one look-up", key("derive_over_lookup"), func(_ *wakuCond, med float64) string { return fmt.Sprintf("**%.0fx**", med) },
		func(lo, hi float64) string { return fmt.Sprintf("%.0f–%.0fx", lo, hi) })
	row("one derivation over one Record", key("derive_over_record"), func(_ *wakuCond, med float64) string { return fmt.Sprintf("%.0fx", med) },
		func(lo, hi float64) string { return fmt.Sprintf("%.0f–%.0fx", lo, hi) })
	row("messages/s on one core if each message derived its chat key", key("msgs_per_s_deriving_each_message"), unit("messages/s"), units("/s"))
	derive, _, _ := q.get("chatkey_derive_ms")
	lookup, _, _ := q.get("chatkey_lookup_ns")
	dRec, _, _ := q.get("derive_over_record")
	fmt.Fprintf(&sb, "\nA chat key costs %s ms to derive, the time of %.0f Records, against %.0f ns to look up cached: the edge derives each chat's key once and never per message.\n\n", sig(derive), dRec, lookup)

	fmt.Fprintf(&sb, "Back-fill of 30 days from our Store v3 service to a client peer over libp2p on 127.0.0.1, as the edge asks (24 h and at most 10 content topics a query, pages of 100, forward), 100 messages per chat per day; medians of %.0f rounds.\n\n", bf[0].m["iterations"])
	sb.WriteString("| chats | condition | queries | pages | messages | back-fill | over the rounds | over in-process | over the rounds | decoding the messages (Record's work) |\n|---|---|---|---|---|---|---|---|---|---|\n")
	cond := func(c string) string {
		if n, ok := strings.CutPrefix(c, "load="); ok {
			return "under load (" + n + " burners)"
		}
		return c
	}
	var chats, perPage, over, decode []string
	for _, r := range bf {
		m := r.m
		fmt.Fprintf(&sb, "| %d | %s | %.0f | %.0f | %.0f | %s ms, %.0f µs a page | %s–%s ms | **%.2fx** | %.2f–%.2fx | %s ms, %.1fx the back-fill |\n",
			r.topics, cond(r.cond), m["queries"], m["pages"], m["msgs"], sig(m["net-ms-med"]), m["net-µs/page"], sig(m["net-ms-min"]), sig(m["net-ms-max"]),
			m["net/direct-med"], m["net/direct-min"], m["net/direct-max"], sig(m["decode-ms-med"]), m["decode/net-med"])
		if r.cond == "quiet" {
			chats = append(chats, strconv.Itoa(r.topics))
			perPage = append(perPage, fmt.Sprintf("%.0f", m["net-µs/page"]))
			over = append(over, fmt.Sprintf("%.2fx", m["net/direct-med"]))
			decode = append(decode, fmt.Sprintf("%.0fx", m["decode/net-med"]))
		}
	}
	fmt.Fprintf(&sb, "\nThe reference is the same queries answered in-process: the request built, served, the response encoded, decoded and checked page by page, without the stream. "+
		"Quiet, for %s chats, the back-fill takes %s as long, the price of a libp2p stream per page (%s µs a page all told), and decoding what it fetched (estimated from a 1000-message sample) takes %s as long as fetching it.\n",
		and(chats), and(over), and(perPage), and(decode))
	return sb.String()
}

// and joins "a", "a and b", "a, b and c".
func and(s []string) string {
	switch len(s) {
	case 0:
		return ""
	case 1:
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}
