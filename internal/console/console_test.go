package console

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

const testToken = "op-token"

// TestAccess: reads are open only when the listener is loopback (else they
// need the token, by basic auth or bearer); actions need the token always,
// are POST only, and are refused cross-site even with the token.
func TestAccess(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{Memory: true})
	com := fixture.CommunityFromKey(fixture.Key(), time.Minute, uint64(time.Now().Add(-time.Hour).Unix()))
	if err := registry.New(b.Communities).Put(t.Context(), com); err != nil {
		t.Fatal(err)
	}
	id := com.ID.String()
	form := func(extra string) string { return url.Values{"community": {id}}.Encode() + extra }
	for _, tc := range []struct {
		name        string
		open        bool
		token       string // configured
		method, uri string
		body        string
		header      map[string]string
		basic       string // password
		want        int
		disabled    bool // the community afterwards
	}{
		{"read open on loopback", true, testToken, "GET", Path, "", nil, "", 200, false},
		{"read without token elsewhere", false, testToken, "GET", Path, "", nil, "", 401, false},
		{"read with wrong token", false, testToken, "GET", Path, "", nil, "nope", 401, false},
		{"read with basic auth", false, testToken, "GET", Path + "live", "", nil, testToken, 200, false},
		{"read with bearer", false, testToken, "GET", Path, "", map[string]string{"Authorization": "Bearer " + testToken}, "", 200, false},
		{"static", true, "", "GET", Path + "static/console.js", "", nil, "", 200, false},
		{"action without token", true, testToken, "POST", Path + "actions/disable", form(""), nil, "", 401, false},
		{"action with wrong token", true, testToken, "POST", Path + "actions/disable", form("&token=nope"), nil, "", 401, false},
		{"action with no token configured", true, "", "POST", Path + "actions/disable", form("&token="), nil, "", 401, false},
		{"action by GET", true, testToken, "GET", Path + "actions/disable?" + form("&token="+testToken), "", nil, "", 405, false},
		{"action cross-site", true, testToken, "POST", Path + "actions/disable", form("&token=" + testToken),
			map[string]string{"Sec-Fetch-Site": "cross-site"}, "", 403, false},
		{"action cross-origin by Origin", true, testToken, "POST", Path + "actions/disable", form("&token=" + testToken),
			map[string]string{"Origin": "http://evil.example"}, "", 403, false},
		{"action same-origin", true, testToken, "POST", Path + "actions/disable", form("&token=" + testToken),
			map[string]string{"Sec-Fetch-Site": "same-origin"}, "", 303, true},
		{"enable again", true, testToken, "POST", Path + "actions/enable", form("&token=" + testToken), nil, "", 303, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(Console{Bus: b, Token: tc.token, OpenReads: tc.open, Logger: testenv.Logger()}, prometheus.NewRegistry())
			srv := httptest.NewServer(c.Handler())
			defer srv.Close()
			req, _ := http.NewRequest(tc.method, srv.URL+tc.uri, strings.NewReader(tc.body))
			if tc.body != "" {
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			if tc.basic != "" {
				req.SetBasicAuth("operator", tc.basic)
			}
			client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("HTTP %d, want %d: %s", resp.StatusCode, tc.want, body)
			}
			if tc.want == 200 && tc.uri == Path && !strings.Contains(string(body), id) {
				t.Errorf("the page does not list %s", id)
			}
			got, err := registry.New(b.Communities).Get(t.Context(), com.ID)
			if err != nil || got.Disabled != tc.disabled {
				t.Errorf("disabled %v (err %v), want %v", got.Disabled, err, tc.disabled)
			}
		})
	}
}

// TestPageBounded: a page lists at most PageSize communities and names the
// next page.
func TestPageBounded(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{Memory: true})
	reg := registry.New(b.Communities)
	for range PageSize + 3 {
		if err := reg.Put(t.Context(), fixture.CommunityFromKey(fixture.Key(), time.Minute, uint64(time.Now().Unix()))); err != nil {
			t.Fatal(err)
		}
	}
	c := New(Console{Bus: b, OpenReads: true}, nil)
	for _, tc := range []struct {
		page, rows, pageShown int
	}{{1, PageSize, 1}, {2, 3, 2}, {9, 3, 2}, {0, PageSize, 1}} {
		v, err := c.load(t.Context(), tc.page)
		if err != nil {
			t.Fatal(err)
		}
		if len(v.Communities) != tc.rows || v.Page != tc.pageShown || v.Pages != 2 || v.Total != PageSize+3 {
			t.Errorf("page %d: %d rows, page %d of %d (total %d); want %d rows, page %d of 2", tc.page, len(v.Communities), v.Page, v.Pages,
				v.Total, tc.rows, tc.pageShown)
		}
	}
}
