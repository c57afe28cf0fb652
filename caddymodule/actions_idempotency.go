package caddymodule

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"

	"github.com/zapgate/caddy-zapier/actions"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/idempotency"
	"github.com/zapgate/caddy-zapier/internal/sweep"
	"github.com/zapgate/caddy-zapier/tokencache"
)

const (
	idempotencyHeader = "Idempotency-Key"
	idempotencyPrefix = "zapier/idempotency"
	// idempotencySweepEvery bounds how often a gateway deletes expired keys.
	idempotencySweepEvery = time.Hour
)

// replayedHeaders are the response headers a replayed answer repeats.
var replayedHeaders = []string{"Content-Type", "Location", "Retry-After"}

// runOnce holds POST run's Idempotency-Key records in Caddy storage, so the
// same key answers the same way on every sidecar sharing it, for 24 hours.
type runOnce struct {
	store   *idempotency.Store
	sweeper sweep.Sweeper
	bg      context.Context
}

func newRunOnce(bg context.Context, storage certmagic.Storage) (*runOnce, error) {
	store, err := idempotency.New(idempotency.Config{Storage: storage, Prefix: idempotencyPrefix})
	if err != nil {
		return nil, err
	}
	return &runOnce{store: store, bg: bg}, nil
}

// serveRunOnce is POST run honouring Idempotency-Key: the same key and body
// within 24 h get the first answer again without another run; the same key
// with another body is 409 idempotency_key_reused; concurrent duplicates
// create one run. Without the header it is plain POST run.
func (h *Actions) serveRunOnce(w http.ResponseWriter, r *http.Request, key tokencache.Key) error {
	ik := r.Header.Get(idempotencyHeader)
	if ik == "" || h.once == nil {
		return h.serveRun(w, r, key)
	}
	if !idempotency.ValidKey(ik) {
		return h.fail(w, r, gateway.BadRequest("Idempotency-Key must be 1 to 255 printable ASCII characters"))
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxConnectBody))
	if err != nil {
		return h.fail(w, r, gateway.BadRequest("the body is too large or could not be read"))
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	h.once.sweeper.Maybe(h.once.bg, time.Now(), idempotencySweepEvery, func(ctx context.Context) { _, _ = h.once.store.Sweep(ctx) })

	scope, err := actions.Owner(r.Context(), h.runs.Keys, key) // keyed: storage never names the user
	if err != nil {
		return h.fail(w, r, err)
	}
	out, err := h.once.store.Begin(r.Context(), scope, ik, body)
	switch {
	case errors.Is(err, idempotency.ErrKeyReused):
		return h.fail(w, r, &gateway.Error{Status: http.StatusConflict, Code: "idempotency_key_reused",
			Message: "this Idempotency-Key was used with a different request body in the last 24 hours"})
	case errors.Is(err, idempotency.ErrInvalidKey):
		return h.fail(w, r, gateway.BadRequest("Idempotency-Key must be 1 to 255 printable ASCII characters"))
	case err != nil:
		return h.fail(w, r, err)
	case out.Kind == idempotency.Replay:
		for name, v := range out.Response.Header {
			w.Header().Set(name, v)
		}
		w.Header().Set("Idempotent-Replayed", "true")
		w.WriteHeader(out.Response.Status)
		_, _ = w.Write(out.Response.Body)
		return nil
	}

	// Proceed: answer as usual, keeping a copy of the answer.
	var buf bytes.Buffer
	rec := caddyhttp.NewResponseRecorder(w, &buf, func(int, http.Header) bool { return true })
	serveErr := h.serveRun(rec, r, key)
	done := context.WithoutCancel(r.Context())
	if status := rec.Status(); serveErr == nil && (status == http.StatusOK || status == http.StatusAccepted) {
		resp := idempotency.Response{Status: status, Header: map[string]string{}, Body: buf.Bytes()}
		for _, name := range replayedHeaders {
			if v := rec.Header().Get(name); v != "" {
				resp.Header[name] = v
			}
		}
		if err := out.Finish(done, resp); err != nil {
			h.logFailure("storing an idempotent answer", key, err)
		}
	} else {
		// No run was created: the key is free for a retry.
		_ = out.Abandon(done)
	}
	if serveErr != nil {
		return serveErr
	}
	return rec.WriteResponse()
}
