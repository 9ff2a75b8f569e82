package console

import (
	"cmp"
	"context"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/placement"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
)

// view is what the page shows.
type view struct {
	Now         time.Time
	Page, Pages int
	Total       int // communities registered
	Communities []community
	DeadLetters []bus.StoredDeadLetter
	DeadTotal   uint64
	DeadMore    bool // more held than shown
	Peers       *peers
	Settings    []Setting
	Actions     bool // the token is configured
	Done, Error string
	PollMillis  int64
	Bounds      map[string]int
}

// community is one row.
type community struct {
	*registry.Community
	Build    *state.Build
	Announce *state.Announce
	Waku     *state.Waku // nil unless it delivered the last announcement
	Seeders  []string
	Placed   int
	Timeline timeline
}

// peers is the Waku peer list.
type peers struct {
	Self   string
	Topics []topicPeers
	List   []peerRow
	Total  int
}

type topicPeers struct {
	Topic string
	Peers int
}

type peerRow struct{ ID, Addr, Direction string }

// timeline is one community's row of the SVG: its last TimelineWindows
// intervals up to now, the windows built (one rect each), what is not
// built yet, and the last announcement.
type timeline struct {
	Built    []span
	Pending  *span
	Announce string // path of the last announcement's marker; "": none in range
}

type span struct {
	X, W  float64
	Title string
}

// maxPayloadShown is how much of a dead letter's payload the page shows.
const maxPayloadShown = 160

// timelineWidth is the SVG's width in user units (it scales to the page).
const timelineWidth = 600.0

func makeTimeline(c *registry.Community, b *state.Build, an *state.Announce, now time.Time) timeline {
	iv := time.Duration(c.Interval)
	if iv <= 0 {
		iv = time.Hour
	}
	start := now.Add(-TimelineWindows * iv)
	x := func(t time.Time) float64 {
		f := float64(t.Sub(start)) / float64(now.Sub(start)) * timelineWidth
		return min(max(f, 0), timelineWidth)
	}
	var tl timeline
	since := time.Unix(int64(c.Since), 0)
	end := time.Unix(int64(b.LastEnd), 0)
	if b.LastEnd > 0 {
		// Windows end at LastEnd and every interval before it, back to since.
		for e, n := end, 0; e.After(since) && e.After(start) && n < TimelineWindows+1; e, n = e.Add(-iv), n+1 {
			from := e.Add(-iv)
			if from.Before(since) {
				from = since
			}
			tl.Built = append(tl.Built, span{X: x(from), W: max(x(e)-x(from)-1, 1),
				Title: fmt.Sprintf("built %s – %s", from.UTC().Format(time.DateTime), e.UTC().Format(time.DateTime))})
		}
	}
	from := end
	if from.Before(since) {
		from = since
	}
	if from.Before(now) {
		tl.Pending = &span{X: x(from), W: max(x(now)-x(from), 1), Title: "not archived yet: from " + from.UTC().Format(time.DateTime)}
	}
	if !an.At.IsZero() && an.At.After(start) {
		tl.Announce = fmt.Sprintf("M%.1f 0 h10 l-5 8 z", x(an.At)-5)
	}
	return tl
}

// load reads what the page shows; page counts from 1.
func (c *Console) load(ctx context.Context, page int) (*view, error) {
	v := &view{Now: time.Now().UTC(), Page: page, Settings: c.Settings, Actions: c.Token != "", PollMillis: PollEvery.Milliseconds(),
		Bounds: map[string]int{"communities": PageSize, "deadLetters": MaxDeadLetters, "peers": MaxPeers}}
	coms, err := registry.New(c.Bus.Communities).List(ctx)
	if err != nil {
		return nil, fmt.Errorf("communities: %w", err)
	}
	slices.SortFunc(coms, func(a, b *registry.Community) int { return cmp.Compare(a.ID.String(), b.ID.String()) })
	v.Total, v.Pages = len(coms), max((len(coms)+PageSize-1)/PageSize, 1)
	v.Page = min(max(page, 1), v.Pages)
	lo := (v.Page - 1) * PageSize
	coms = coms[lo:min(lo+PageSize, len(coms))]
	st := &state.Store{KV: c.Bus.State}
	members, serving, err := c.seeders(ctx)
	if err != nil {
		return nil, err
	}
	for _, com := range coms {
		id := com.ID.String()
		b, _, err := st.GetBuild(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("build state of %s: %w", id, err)
		}
		an, _, err := st.GetAnnounce(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("announce state of %s: %w", id, err)
		}
		w, _, err := st.GetWaku(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("waku state of %s: %w", id, err)
		}
		row := community{Community: com, Build: b, Announce: an, Timeline: makeTimeline(com, b, an, v.Now)}
		if w.Clock > 0 && w.Clock == an.Clock {
			row.Waku = w
		}
		if serving != nil {
			got, err := serving.Seeders(ctx, id, members)
			if err != nil {
				return nil, fmt.Errorf("seeders of %s: %w", id, err)
			}
			for s, ih := range got {
				if b.InfoHash != "" && ih == b.InfoHash {
					row.Seeders = append(row.Seeders, s)
				}
			}
			slices.Sort(row.Seeders)
			row.Placed = len(placement.Owners(id, members, placement.FactorOf(members)))
		}
		v.Communities = append(v.Communities, row)
	}
	if v.DeadLetters, v.DeadTotal, err = bus.DeadLettersUpTo(ctx, c.Bus, MaxDeadLetters); err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	v.DeadMore = v.DeadTotal > uint64(len(v.DeadLetters))
	v.Peers = c.peers()
	return v, nil
}

// seeders reads the live seeders and who serves what.
func (c *Console) seeders(ctx context.Context) ([]placement.Member, *placement.Serving, error) {
	mkv, skv, err := c.Bus.SeederBuckets(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("seeder buckets: %w", err)
	}
	ms, err := placement.ReadMembers(ctx, mkv)
	if err != nil {
		return nil, nil, fmt.Errorf("seeders: %w", err)
	}
	return ms, &placement.Serving{KV: skv}, nil
}

func (c *Console) peers() *peers {
	if c.Peers == nil {
		return nil
	}
	h := c.Peers.Host()
	p := &peers{Self: h.ID().String()}
	for _, t := range c.Peers.PubsubTopics() {
		p.Topics = append(p.Topics, topicPeers{Topic: t, Peers: c.Peers.TopicPeers(t)})
	}
	ids := h.Network().Peers()
	p.Total = len(ids)
	for _, id := range ids[:min(len(ids), MaxPeers)] {
		row := peerRow{ID: id.String()}
		if cs := h.Network().ConnsToPeer(id); len(cs) > 0 {
			row.Addr, row.Direction = cs[0].RemoteMultiaddr().String(), cs[0].Stat().Direction.String()
		}
		p.List = append(p.List, row)
	}
	slices.SortFunc(p.List, func(a, b peerRow) int { return cmp.Compare(a.ID, b.ID) })
	return p
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, name string) {
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	v, err := c.load(ctx, page)
	if err != nil {
		c.Logger.Warn("console: state not read", "err", err)
		http.Error(w, "state not read: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	v.Done, v.Error = r.URL.Query().Get("done"), r.URL.Query().Get("error")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := c.tmpl.ExecuteTemplate(w, name, v); err != nil {
		c.Logger.Warn("console: page not rendered", "err", err)
	}
}

func (c *Console) page(w http.ResponseWriter, r *http.Request) { c.render(w, r, "page.html") }
func (c *Console) live(w http.ResponseWriter, r *http.Request) { c.render(w, r, "live") }

var funcs = template.FuncMap{
	"unix": func(s uint64) string {
		if s == 0 {
			return "—"
		}
		return time.Unix(int64(s), 0).UTC().Format(time.DateTime)
	},
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format(time.DateTime)
	},
	"ago": func(t time.Time, now time.Time) string {
		if t.IsZero() {
			return ""
		}
		return "(" + now.Sub(t).Round(time.Second).String() + " ago)"
	},
	"short": func(s string) string {
		if len(s) <= 18 {
			return s
		}
		return s[:10] + "…" + s[len(s)-6:]
	},
	"interval": func(d registry.Duration) string { return time.Duration(d).String() },
	"add":      func(a, b int) int { return a + b },
	"row":      func(i int) int { return 22*i + 4 },
	"height":   func(n int) int { return 22*n + 8 },
	"width":    func() float64 { return timelineWidth },
	"windows":  func() int { return TimelineWindows },
	"payload": func(b []byte) string {
		if len(b) > maxPayloadShown {
			return string(b[:maxPayloadShown]) + "…"
		}
		return string(b)
	},
}
