package actions

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/runcallback"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

const (
	// maxCallbackURL is Zapier's documented limit on callback_url.
	maxCallbackURL = 2048
	// DefaultCallbackTimeout is how long POST run waits for Zapier's
	// callback before it polls instead.
	DefaultCallbackTimeout = 20 * time.Second
)

// CallbackOutcomes are the outcomes of a delivery to the callback route.
var CallbackOutcomes = []string{"accepted", "bad_signature", "keys_unavailable", "malformed", "unknown_run", "replayed", "failed"}

// CallbackConfig turns run callbacks on: runs are created with URL and
// finish from Zapier's signed callback instead of polls.
type CallbackConfig struct {
	// URL is the public https URL of the callback route; empty is off.
	URL string
	// JWKSURL is where Zapier's callback signing keys are; required with URL.
	JWKSURL string
	// Issuer and Audience a callback signature must carry (one at least).
	Issuer, Audience string
	// Timeout is how long POST run waits for the callback before it polls;
	// zero is DefaultCallbackTimeout.
	Timeout time.Duration
	// AllowMissingSubject accepts a signature that names no run.
	AllowMissingSubject bool
}

// Verifier checks the options (setting the default Timeout) and builds
// the callback verifier; nil when callbacks are off.
func (c *CallbackConfig) Verifier() (*runcallback.Verifier, error) {
	if c.URL == "" {
		if c.JWKSURL != "" {
			return nil, errors.New("callback_jwks_url is set but run_callback_url is not")
		}
		return nil, nil
	}
	u, err := url.Parse(c.URL)
	switch {
	case err != nil || u.Host == "" || u.User != nil:
		return nil, errors.New("run_callback_url must be an absolute https URL")
	case u.Scheme != "https":
		return nil, errors.New("run_callback_url must be https (Zapier refuses other schemes)")
	case len(c.URL) > maxCallbackURL:
		return nil, fmt.Errorf("run_callback_url is longer than Zapier's %d characters", maxCallbackURL)
	case c.JWKSURL == "":
		return nil, errors.New("callback_jwks_url is required with run_callback_url: Zapier signs callbacks with keys whose JWKS URL it does not document, so it must be configured")
	case c.Audience == "" && c.Issuer == "":
		return nil, errors.New("callback_audience (or callback_issuer) is required with run_callback_url: a callback signature must be checked as meant for this gateway")
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultCallbackTimeout
	}
	if c.Timeout < 0 {
		return nil, errors.New("callback_timeout must not be negative")
	}
	return runcallback.NewVerifier(runcallback.VerifierConfig{
		JWKSURL:        c.JWKSURL,
		Issuer:         c.Issuer,
		Audience:       c.Audience,
		RequireSubject: !c.AllowMissingSubject,
	})
}

// callbackWaiters wakes the runs waiting in this process when their
// callback arrives here; runs waiting on other sidecars read storage.
type callbackWaiters struct {
	mu      sync.Mutex
	waiters map[string][]chan struct{}
}

func (c *callbackWaiters) subscribe(runID string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	if c.waiters == nil {
		c.waiters = map[string][]chan struct{}{}
	}
	c.waiters[runID] = append(c.waiters[runID], ch)
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		list := c.waiters[runID]
		for i, w := range list {
			if w == ch {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(c.waiters, runID)
		} else {
			c.waiters[runID] = list
		}
	}
}

func (c *callbackWaiters) notify(runID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range c.waiters[runID] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (h *Handler) observeCallback(outcome string) {
	if h.cfg.ObserveCallback != nil {
		h.cfg.ObserveCallback(outcome)
	}
}

// serveCallback is POST callback: Zapier delivering a finished run. It
// changes nothing unless the delivery is signed by Zapier, names a run this
// gateway created, and is the first for that run.
func (h *Handler) serveCallback(w http.ResponseWriter, r *http.Request) error {
	if !gateway.AllowMethod(w, r, http.MethodPost) {
		return nil
	}
	refuse := func(outcome string, aerr *gateway.Error) error {
		h.observeCallback(outcome)
		if ce := h.logger.Check(zap.InfoLevel, "action-run callback refused"); ce != nil {
			ce.Write(zap.String("outcome", outcome), zap.String("remote_addr", r.RemoteAddr))
		}
		gateway.WriteError(w, aerr)
		return nil
	}
	failed := func(err error) error {
		h.observeCallback("failed")
		return &gateway.HandlerError{Status: http.StatusInternalServerError, Err: err} // storage failed: a 500, which Zapier retries
	}
	if h.verifier == nil {
		return refuse("failed", &gateway.Error{Status: http.StatusNotFound, Code: "not_found", Message: "run callbacks are not configured (run_callback_url)"})
	}
	token := r.Header.Get(runcallback.SignatureHeader)
	claims, err := h.verifier.Verify(r.Context(), token)
	if errors.Is(err, runcallback.ErrKeysUnavailable) {
		return refuse("keys_unavailable", &gateway.Error{Status: http.StatusServiceUnavailable, Code: "callback_keys_unavailable",
			Message: "Zapier's callback signing keys could not be fetched; retry later", RetryAfter: 5 * time.Second})
	}
	if err != nil {
		return refuse("bad_signature", &gateway.Error{Status: http.StatusUnauthorized, Code: "callback_signature_invalid",
			Message: "the Zapier-Callback-Signature header is missing or invalid"})
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, runcallback.MaxDeliveryBytes+1))
	if err != nil {
		return refuse("malformed", gateway.BadRequest("reading the callback body failed"))
	}
	delivery, err := runcallback.ParseDelivery(body)
	if err != nil {
		return refuse("malformed", gateway.BadRequest(err.Error()))
	}
	if !runcallback.BindsRun(claims, delivery.RunID) {
		return refuse("bad_signature", &gateway.Error{Status: http.StatusUnauthorized, Code: "callback_signature_invalid",
			Message: "the signature was made for another run"})
	}
	// A token is good for one delivery: seen before (here or on a sidecar
	// sharing the storage), it is a replay, whichever run it names.
	switch err := h.replays.Spend(r.Context(), claims, token); {
	case errors.Is(err, runcallback.ErrReplayed):
		return refuse("replayed", &gateway.Error{Status: http.StatusConflict, Code: "callback_replayed",
			Message: "this callback signature was already used"})
	case err != nil:
		return failed(err)
	}
	result := &RunResult{Status: delivery.Status, Results: delivery.Results, Errors: delivery.Errors, Received: time.Now().UTC()}
	err = h.runs.Complete(r.Context(), delivery.RunID, result)
	if err != nil && !errors.Is(err, ErrRunUnknown) && !errors.Is(err, ErrRunCompleted) {
		// Storing the result failed: Zapier's retry (a 5xx) may bring the
		// same token again.
		_ = h.replays.Unspend(context.WithoutCancel(r.Context()), claims, token)
	}
	switch {
	case errors.Is(err, ErrRunUnknown):
		return refuse("unknown_run", &gateway.Error{Status: http.StatusNotFound, Code: "run_not_found",
			Message: "no run with this id was created through this gateway"})
	case errors.Is(err, ErrRunCompleted):
		return refuse("replayed", &gateway.Error{Status: http.StatusConflict, Code: "callback_replayed",
			Message: "this run's result was already delivered"})
	case err != nil:
		return failed(err)
	}
	h.observeCallback("accepted")
	h.callbacks.notify(delivery.RunID)
	gateway.WriteJSON(w, http.StatusOK, struct {
		Accepted bool `json:"accepted"`
	}{true})
	return nil
}

// awaitCallback waits until the run's callback has been stored (here or by
// another sidecar) or until; ok is false when it did not come in time.
func (h *Handler) awaitCallback(ctx context.Context, runID string, until time.Time) (zapierapi.ActionRun, bool) {
	woken, unsubscribe := h.callbacks.subscribe(runID)
	defer unsubscribe()
	deadline := time.NewTimer(time.Until(until))
	defer deadline.Stop()
	tick := time.NewTicker(CallbackStoragePoll)
	defer tick.Stop()
	for {
		if rec, err := h.runs.Get(ctx, runID); err == nil && rec != nil && rec.Result != nil {
			return rec.Result.Run(runID), true
		}
		select {
		case <-ctx.Done():
			return zapierapi.ActionRun{}, false
		case <-deadline.C:
			return zapierapi.ActionRun{}, false
		case <-woken:
		case <-tick.C:
		}
	}
}
