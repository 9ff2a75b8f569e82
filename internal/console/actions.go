package console

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/scheduler"
)

// maxForm bounds an action's form: a community id, a sequence and a token.
const maxForm = 4 << 10

// action runs one POSTed action: it needs the operator token (the
// cross-origin check ran before), logs who did what, counts the result and
// sends the browser back to the page with the outcome.
func (c *Console) action(name string, fn func(*http.Request) (string, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		_, operator := tokenOf(r)
		log := c.Logger.With("action", name, "remote", r.RemoteAddr, "operator", operator,
			"community", r.PostFormValue("community"), "seq", r.PostFormValue("seq"))
		if !c.authorized(r) {
			c.actions.WithLabelValues(name, "unauthorized").Inc()
			log.Warn("console action refused: no valid operator token")
			msg := "the operator token is required"
			if c.Token == "" {
				msg = "actions are off: the fleet has no operator token (set INGEST_TOKEN)"
			}
			http.Error(w, msg, http.StatusUnauthorized)
			return
		}
		done, err := fn(r)
		q := url.Values{}
		if p := r.PostFormValue("page"); p != "" {
			q.Set("page", p)
		}
		if err != nil {
			c.actions.WithLabelValues(name, "failed").Inc()
			log.Warn("console action failed", "err", err)
			q.Set("error", name+": "+err.Error())
		} else {
			c.actions.WithLabelValues(name, "ok").Inc()
			log.Info("console action", "done", done)
			q.Set("done", done)
		}
		if r.Header.Get("Accept") == "application/json" {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]string{"done": q.Get("done"), "error": q.Get("error")})
			return
		}
		http.Redirect(w, r, Path+"?"+q.Encode(), http.StatusSeeOther)
	}
}

func formCommunity(r *http.Request) (archive.CommunityID, error) {
	id, err := archive.ParseCommunityID(r.PostFormValue("community"))
	if err != nil {
		return id, fmt.Errorf("community: %w", err)
	}
	return id, nil
}

func formSeq(r *http.Request) (uint64, error) {
	seq, err := strconv.ParseUint(r.PostFormValue("seq"), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("seq: not a dead letter's sequence")
	}
	return seq, nil
}

func (c *Console) trigger(r *http.Request) (string, error) {
	id, err := formCommunity(r)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	ev, err := scheduler.Trigger(ctx, c.Bus, id, time.Now())
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("build of %s up to %s requested", id, time.Unix(int64(ev.End), 0).UTC().Format(time.DateTime)), nil
}

func (c *Console) setDisabled(r *http.Request, disabled bool) (string, error) {
	id, err := formCommunity(r)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	if err := registry.New(c.Bus.Communities).SetDisabled(ctx, id, disabled); err != nil {
		return "", err
	}
	if disabled {
		return id.String() + " disabled", nil
	}
	return id.String() + " enabled", nil
}

func (c *Console) enable(r *http.Request) (string, error)  { return c.setDisabled(r, false) }
func (c *Console) disable(r *http.Request) (string, error) { return c.setDisabled(r, true) }

func (c *Console) requeue(r *http.Request) (string, error) {
	seq, err := formSeq(r)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	l, err := bus.GetDeadLetter(ctx, c.Bus, seq)
	if err != nil {
		return "", err
	}
	if err := bus.Redeliver(ctx, c.Bus, l); err != nil {
		return "", fmt.Errorf("requeue %d: %w", seq, err)
	}
	return fmt.Sprintf("dead letter %d requeued on %s", seq, l.Subject), nil
}

func (c *Console) discard(r *http.Request) (string, error) {
	seq, err := formSeq(r)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	if err := bus.DiscardDeadLetter(ctx, c.Bus, seq); err != nil {
		return "", err
	}
	return fmt.Sprintf("dead letter %d discarded", seq), nil
}
