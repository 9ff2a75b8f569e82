package store

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/registry"
)

// IngestPath is the HTTP route of the ingest endpoint.
const IngestPath = "POST /v1/communities/{id}/messages"

// Handler serves the ingest endpoint: a JSON array or JSON lines of messages
// for one community. With a non-empty token, requests must carry
// "Authorization: Bearer <token>". A decodable batch is answered 200 with an
// IngestResult naming every message that was not stored and why, or 503 when
// some could not be stored for an outage (those may be sent again).
func (s *Store) Handler(token string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token != "" {
			got := r.Header.Get("Authorization")
			if subtle.ConstantTimeCompare([]byte(got), []byte("Bearer "+token)) != 1 {
				writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong bearer token"})
				return
			}
		}
		c, err := archive.ParseCommunityID(r.PathValue("id"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, MaxBatchBytes+1))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		if len(body) > MaxBatchBytes {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "batch is over the 64 MiB limit: send fewer messages per request"})
			return
		}
		items, err := DecodeBatch(body, MaxBatchBytes)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		res, err := s.IngestItems(r.Context(), c, items)
		switch {
		case errors.Is(err, registry.ErrNotFound):
			writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
		case err != nil:
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		case res.Failed > 0:
			w.Header().Set("Retry-After", "5")
			writeJSON(w, http.StatusServiceUnavailable, res)
		default:
			writeJSON(w, http.StatusOK, res)
		}
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
