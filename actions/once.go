package actions

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/idempotency"
	"github.com/zapgate/caddy-zapier/internal/sweep"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

const (
	idempotencyHeader = "Idempotency-Key"
	// IdempotencyPrefix is where POST run's Idempotency-Key records live.
	IdempotencyPrefix = "zapier/idempotency"
	// idempotencySweepEvery bounds how often a gateway deletes expired keys.
	idempotencySweepEvery = time.Hour
	// idempotencyOwnerAAD binds sealed owners to Idempotency-Key records.
	idempotencyOwnerAAD = "caddy-zapier idempotency owner v1"
)

// replayedHeaders are the response headers a replayed answer repeats.
var replayedHeaders = []string{"Content-Type", "Location", "Retry-After"}

// runOnce holds POST run's Idempotency-Key records in storage, so the same
// key answers the same way on every sidecar sharing it, for 24 hours.
type runOnce struct {
	store   *idempotency.Store
	sweeper sweep.Sweeper
	bg      context.Context
}

// newRunOnce keeps the records in storage; a key whose first request made
// no create call is taken over after takeover (PendingTakeover).
func newRunOnce(bg context.Context, storage certmagic.Storage, takeover time.Duration) (*runOnce, error) {
	store, err := idempotency.New(idempotency.Config{Storage: storage, Prefix: IdempotencyPrefix, PendingTimeout: takeover})
	if err != nil {
		return nil, err
	}
	return &runOnce{store: store, bg: bg}, nil
}

// runTrack is what POST run tells its Idempotency-Key record as it goes:
// the create call is about to be made (commit), and the run it made.
type runTrack struct {
	out       idempotency.Outcome
	bg        context.Context
	committed bool
	runID     string
	// notMade: the create call failed in a way that shows no run was made.
	notMade bool
	onErr   func(msg string, err error)
}

// commit marks the key committed before the create call: from now on it
// is never taken over. A request that cannot mark it does not create.
func (t *runTrack) commit() error {
	if t == nil {
		return nil
	}
	if err := t.out.Commit(t.bg); err != nil {
		return err
	}
	t.committed = true
	return nil
}

// created records the run under the key at once, before its result is
// awaited, so whatever happens next a retry with the key gets this run.
func (t *runTrack) created(runID string) {
	if t == nil {
		return
	}
	t.runID = runID
	if err := t.out.Provisional(t.bg, provisionalRun(runID)); err != nil {
		t.onErr("storing the run under its Idempotency-Key", err)
	}
}

// createFailed notes whether the failed create call certainly made no run.
func (t *runTrack) createFailed(err error) {
	if t == nil {
		return
	}
	zerr, ok := zapierapi.AsError(err)
	// Not a Zapier error: nothing was sent (no token, a bad request).
	t.notMade = !ok || zerr.Kind == zapierapi.KindRejected || zerr.Kind == zapierapi.KindRateLimited || zerr.Kind == zapierapi.KindUnavailable
}

// provisionalRun is POST run's answer for a run that exists but whose
// result the request did not await: 202 with where to poll.
func provisionalRun(runID string) idempotency.Response {
	body, _ := json.Marshal(struct {
		Run runView `json:"run"`
	}{runView{ID: runID, Status: "waiting"}})
	return idempotency.Response{Status: http.StatusAccepted, Body: append(body, '\n'), Header: map[string]string{
		"Content-Type": "application/json", "Location": "runs/" + url.PathEscape(runID)}}
}

// unknownOutcome is stored for a key whose create call failed without
// telling whether it made a run: a retry replays it rather than risk a
// second run.
func unknownOutcome() idempotency.Response {
	type detail struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	body, _ := json.Marshal(struct {
		Error detail `json:"error"`
	}{detail{Code: "zapier_api_failed",
		Message: "Zapier's API failed while creating the run; it may have been created: check the user's runs before running the action again with a new Idempotency-Key"}})
	return idempotency.Response{Status: http.StatusBadGateway, Body: append(body, '\n'), Header: map[string]string{"Content-Type": "application/json"}}
}

// serveRunOnce is POST run honouring Idempotency-Key: the same key and body
// within 24 h get the first answer again without another run; the same key
// with another body is 409 idempotency_key_reused; concurrent duplicates
// create one run. The run is recorded under the key the moment Zapier
// returns it, so a retry gets that run even when the first request's
// client went away. Without the header it is plain POST run.
func (h *Handler) serveRunOnce(w http.ResponseWriter, r *http.Request, id gateway.Identity) error {
	ik := r.Header.Get(idempotencyHeader)
	if ik == "" || h.once == nil {
		return h.serveRun(w, r, id, nil)
	}
	if !idempotency.ValidKey(ik) {
		return h.fail(w, r, gateway.BadRequest("Idempotency-Key must be 1 to 255 printable ASCII characters"))
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		return h.fail(w, r, gateway.BadRequest("the body is too large or could not be read"))
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	h.once.sweeper.Maybe(h.once.bg, time.Now(), idempotencySweepEvery, func(ctx context.Context) { _, _ = h.once.store.Sweep(ctx) })

	caller, err := h.idempotencyCaller(r.Context(), id)
	if err != nil {
		return h.fail(w, r, err)
	}
	out, err := h.once.store.BeginAs(r.Context(), caller, ik, body)
	switch {
	case errors.Is(err, idempotency.ErrKeyReused):
		return h.fail(w, r, &gateway.Error{Status: http.StatusConflict, Code: "idempotency_key_reused",
			Message: "this Idempotency-Key was used with a different request body in the last 24 hours"})
	case errors.Is(err, idempotency.ErrOutcomeUnknown):
		return h.fail(w, r, &gateway.Error{Status: http.StatusConflict, Code: "idempotency_outcome_unknown",
			Message: "the first request with this Idempotency-Key may have created the run but its gateway stopped before recording it; it is not run again: check the user's runs"})
	case errors.Is(err, idempotency.ErrInvalidKey):
		return h.fail(w, r, gateway.BadRequest("Idempotency-Key must be 1 to 255 printable ASCII characters"))
	case err != nil:
		return h.fail(w, r, err)
	case out.Kind == idempotency.Replay:
		h.replayRun(w, r, id, out.Response)
		return nil
	}

	// Proceed: answer as usual, keeping a copy of the answer.
	done := context.WithoutCancel(r.Context())
	track := &runTrack{out: out, bg: done, onErr: func(msg string, err error) { h.logFailure(msg, id, err) }}
	rec := &recorder{w: w}
	serveErr := h.serveRun(rec, r, id, track)
	status := rec.status
	var finish *idempotency.Response
	switch {
	case serveErr == nil && (status == http.StatusOK || status == http.StatusAccepted):
		resp := idempotency.Response{Status: status, Header: map[string]string{}, Body: rec.buf.Bytes()}
		for _, name := range replayedHeaders {
			if v := rec.Header().Get(name); v != "" {
				resp.Header[name] = v
			}
		}
		finish = &resp
	case track.runID != "":
		// The run exists but was not answered (the client went away, the
		// wait or a poll failed): a retry gets it, 202 and where to poll.
		resp := provisionalRun(track.runID)
		finish = &resp
	case track.committed && !track.notMade:
		// The create call may have made a run whose id never came back.
		resp := unknownOutcome()
		finish = &resp
	case track.committed:
		_ = out.Release(done) // Zapier refused: no run, the key is free
	default:
		_ = out.Abandon(done) // no create call: the key is free
	}
	if finish != nil {
		if err := out.Finish(done, *finish); err != nil {
			h.logFailure("storing an idempotent answer", id, err)
		}
	}
	if serveErr != nil {
		return serveErr
	}
	return rec.writeResponse()
}

// idempotencyCaller is the caller of an Idempotency-Key record: scoped by
// the identity's keyed name (storage never names the user), with the
// sealed identity so offboarding finds a whole tenant's records.
func (h *Handler) idempotencyCaller(ctx context.Context, id gateway.Identity) (idempotency.Caller, error) {
	scope, err := Owner(ctx, h.runs.Keys, id)
	if err != nil {
		return idempotency.Caller{}, err
	}
	name, err := h.cfg.Names.Name(ctx, id)
	if err != nil {
		return idempotency.Caller{}, err
	}
	sealed, err := h.cfg.Names.SealOwner(ctx, id, []byte(idempotencyOwnerAAD))
	if err != nil {
		return idempotency.Caller{}, err
	}
	return idempotency.Caller{Scope: scope, Subject: name, Sealed: sealed}, nil
}

// replayRun answers a stored answer again. A stored 202 names a run that
// had not ended: if it has ended since, the answer is 200 with its result,
// as runs/{id} would give (from its callback, or one poll); otherwise the
// stored 202 again.
func (h *Handler) replayRun(w http.ResponseWriter, r *http.Request, id gateway.Identity, resp idempotency.Response) {
	w.Header().Set("Idempotent-Replayed", "true")
	if runID, ok := strings.CutPrefix(resp.Header["Location"], "runs/"); ok && resp.Status == http.StatusAccepted {
		if rid, err := url.PathUnescape(runID); err == nil && ValidRunID(rid) {
			if run, ok := h.endedRun(r.Context(), id, rid); ok {
				writeRun(w, run, "", 0)
				return
			}
		}
	}
	for name, v := range resp.Header {
		w.Header().Set(name, v)
	}
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
}

// endedRun is the caller's run once it has ended, from its stored callback
// or one poll; ok is false while it runs, or when that cannot be told now.
func (h *Handler) endedRun(ctx context.Context, id gateway.Identity, runID string) (zapierapi.ActionRun, bool) {
	rec, mine, err := h.runs.Owned(ctx, runID, id)
	if err != nil || !mine {
		return zapierapi.ActionRun{}, false
	}
	if rec.Result != nil {
		return rec.Result.Run(runID), true
	}
	run, err := h.poll(ctx, id, runID, rec.Stored)
	if err != nil || !run.Done() {
		return zapierapi.ActionRun{}, false
	}
	return run, true
}
