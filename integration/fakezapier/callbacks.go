package fakezapier

// Action-run callbacks (zapier-api-2026.md §2.3–§2.5): once a run created
// with a callback_url reaches its terminal state, the fake POSTs the run to
// it with a Zapier-Callback-Signature JWT (callbacksign.go). Up to 3
// attempts; only 5xx, network errors and timeouts are retried, with
// exponential backoff; 3xx and 4xx (429 included) are final; redirects are
// not followed. Deliveries run in the background until Close.

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"
)

const (
	callbackAttempts = 3
	// While callbacks are queued the fake's clock is re-read this often, so
	// that tests which move Config.Now forward see them fire promptly.
	callbackClockPoll = 20 * time.Millisecond
	// CallbackDeliveries keeps at most this many records; the oldest
	// finished ones go first.
	maxCallbackRecords = 10000
)

// CallbackFault is a test knob for the next callbacks (SetCallbackFault).
type CallbackFault int

const (
	CallbackOK           CallbackFault = iota // a valid signature (the default)
	CallbackBadSignature                      // signature bytes corrupted
	CallbackExpired                           // iat and exp in the past
	CallbackUnknownKid                        // signed by a key not in the JWKS, with a kid not in it
	CallbackNoSignature                       // no Zapier-Callback-Signature header
	CallbackDrop                              // never sent (a gateway must fall back to polling)
)

func (f CallbackFault) String() string {
	switch f {
	case CallbackOK:
		return "ok"
	case CallbackBadSignature:
		return "bad-signature"
	case CallbackExpired:
		return "expired"
	case CallbackUnknownKid:
		return "unknown-kid"
	case CallbackNoSignature:
		return "no-signature"
	case CallbackDrop:
		return "drop"
	}
	return fmt.Sprintf("CallbackFault(%d)", int(f))
}

// CallbackDelivery is the state of one run's callback.
type CallbackDelivery struct {
	RunID, URL string
	Attempts   int           // POSTs made so far (ResendCallback not included)
	LastStatus int           // HTTP status of the last attempt; 0 before one or without a response
	Err        string        // why the last attempt failed, or why none was made
	Delivered  bool          // an attempt was answered 2xx
	Done       bool          // no further attempt will be made (delivered, given up, dropped or closed)
	Fault      CallbackFault // the fault in force when the run finished
}

// CallbackStatusError is returned by ResendCallback and SendForgedCallback
// when the receiver answered with a non-2xx status.
type CallbackStatusError struct{ Status int }

func (e *CallbackStatusError) Error() string {
	return fmt.Sprintf("callback receiver answered HTTP %d", e.Status)
}

// ErrClosed is returned for callback operations after Close.
var ErrClosed = errors.New("fakezapier: server closed")

type callbackState struct {
	keys   callbackKeys
	client *http.Client
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	wake chan struct{} // a callback was queued

	mu         sync.Mutex // guards below
	closed     bool
	fault      CallbackFault
	deliveries map[string]*callbackRecord // by run id
	order      []*callbackRecord
	pending    pendingCallbacks // runs not yet terminal
	scheduling bool             // runCallbackScheduler is running
}

type callbackRecord struct {
	CallbackDelivery
	body []byte // what was sent; nil before the first attempt
	sig  string
}

func (s *Server) initCallbacks() {
	c := &s.cb
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.lookup = lookupNetIP
	client := http.Client{}
	if s.cfg.CallbackHTTPClient != nil {
		client = *s.cfg.CallbackHTTPClient // a copy, so the caller's client keeps its redirect policy
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.client = &client
	c.deliveries = map[string]*callbackRecord{}
	c.wake = make(chan struct{}, 1)
}

// Close stops callback deliveries, waiting for those in flight to return.
// It is idempotent. The HTTP handler keeps working; runs created later get
// no callback.
func (s *Server) Close() {
	c := &s.cb
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
}

// SetCallbackFault sets how callbacks of runs finishing from now on are
// sent (CallbackOK restores the default).
func (s *Server) SetCallbackFault(f CallbackFault) {
	s.cb.mu.Lock()
	s.cb.fault = f
	s.cb.mu.Unlock()
}

// CallbackDeliveries returns the callbacks of runs created with a
// callback_url, in creation order.
func (s *Server) CallbackDeliveries() []CallbackDelivery {
	c := &s.cb
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]CallbackDelivery, 0, len(c.order))
	for _, rec := range c.order {
		out = append(out, rec.CallbackDelivery)
	}
	return out
}

// scheduleCallback queues run's callback until the run is terminal.
func (s *Server) scheduleCallback(run *actionRun) {
	c := &s.cb
	rec := &callbackRecord{CallbackDelivery: CallbackDelivery{RunID: run.ID, URL: run.callbackURL}}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.order) >= maxCallbackRecords {
		if i := slices.IndexFunc(c.order, func(r *callbackRecord) bool { return r.Done }); i >= 0 {
			delete(c.deliveries, c.order[i].RunID)
			c.order = slices.Delete(c.order, i, i+1)
		}
	}
	c.deliveries[run.ID] = rec
	c.order = append(c.order, rec)
	if c.closed {
		rec.Err, rec.Done = ErrClosed.Error(), true
		return
	}
	heap.Push(&c.pending, pendingCallback{run, rec})
	if !c.scheduling {
		c.scheduling = true
		c.wg.Add(1) // under mu, so that Close's Wait cannot miss it
		go s.runCallbackScheduler()
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// runCallbackScheduler starts the delivery of every queued callback whose
// run has reached its terminal state on the fake's clock. The clock can be
// moved by tests (Config.Now), so it is re-read every callbackClockPoll
// while anything is queued rather than waited for with a timer.
func (s *Server) runCallbackScheduler() {
	c := &s.cb
	defer c.wg.Done()
	tick := time.NewTicker(callbackClockPoll)
	defer tick.Stop()
	for {
		c.mu.Lock()
		now := s.now()
		for len(c.pending) > 0 && !c.pending[0].run.doneAt.After(now) {
			p := heap.Pop(&c.pending).(pendingCallback)
			c.wg.Add(1)
			go s.deliverCallback(p.run, p.rec)
		}
		idle := len(c.pending) == 0
		c.mu.Unlock()
		var ticks <-chan time.Time
		if !idle {
			ticks = tick.C
		}
		select {
		case <-c.ctx.Done():
			c.mu.Lock()
			for _, p := range c.pending {
				p.rec.Err, p.rec.Done = "server closed before the run finished", true
			}
			c.pending = nil
			c.mu.Unlock()
			return
		case <-c.wake:
		case <-ticks:
		}
	}
}

// deliverCallback makes up to callbackAttempts POSTs for a finished run.
func (s *Server) deliverCallback(run *actionRun, rec *callbackRecord) {
	c := &s.cb
	defer c.wg.Done()
	finish := func(err string) {
		c.mu.Lock()
		rec.Err, rec.Done = err, true
		c.mu.Unlock()
	}
	c.mu.Lock()
	fault := c.fault
	rec.Fault = fault
	c.mu.Unlock()
	if fault == CallbackDrop {
		s.logf("fakezapier: callback of run %s dropped (CallbackDrop)", run.ID)
		finish("dropped by CallbackDrop")
		return
	}
	body, err := json.Marshal(map[string]any{"data": callbackData(run)})
	if err != nil {
		finish("marshal: " + err.Error())
		return
	}
	// Signed once: retries are byte-identical, like ResendCallback.
	sig := s.callbackSignature(run.ID, fault)
	c.mu.Lock()
	rec.body, rec.sig = body, sig
	c.mu.Unlock()

	for attempt := 1; attempt <= callbackAttempts; attempt++ {
		if attempt > 1 && !sleepCtx(c.ctx, s.cfg.CallbackRetryBase<<(attempt-2)) {
			finish("server closed between attempts")
			return
		}
		status, err := s.postCallback(c.ctx, run.callbackURL, body, sig)
		ok := status >= 200 && status < 300
		retry := !ok && c.ctx.Err() == nil && (err != nil || status >= 500)
		c.mu.Lock()
		rec.Attempts, rec.LastStatus, rec.Delivered = attempt, status, ok
		rec.Err = ""
		switch {
		case err != nil:
			rec.Err = err.Error()
		case !ok:
			rec.Err = fmt.Sprintf("HTTP %d", status)
		}
		rec.Done = !retry || attempt == callbackAttempts
		c.mu.Unlock()
		s.logf("fakezapier: callback of run %s, attempt %d: status %d err %v", run.ID, attempt, status, err)
		if !retry {
			return
		}
	}
}

type pendingCallback struct {
	run *actionRun
	rec *callbackRecord
}

// pendingCallbacks is a min-heap by the run's terminal time.
type pendingCallbacks []pendingCallback

func (h pendingCallbacks) Len() int           { return len(h) }
func (h pendingCallbacks) Less(i, j int) bool { return h[i].run.doneAt.Before(h[j].run.doneAt) }
func (h pendingCallbacks) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *pendingCallbacks) Push(x any)        { *h = append(*h, x.(pendingCallback)) }
func (h *pendingCallbacks) Pop() any {
	old := *h
	p := old[len(old)-1]
	*h = old[:len(old)-1]
	return p
}

// callbackData is the polling view of the finished run plus its id.
func callbackData(run *actionRun) map[string]any {
	data := run.view(run.doneAt)
	data["id"] = run.ID
	return data
}

// postCallback makes one attempt; status is 0 when there was no response.
func (s *Server) postCallback(ctx context.Context, url string, body []byte, sig string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CallbackTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if sig != "" {
		req.Header.Set("Zapier-Callback-Signature", sig)
	}
	resp, err := s.cb.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// ResendCallback POSTs the last callback sent for runID again, byte for
// byte (same body and signature, even if that has expired since), once and
// synchronously, as a replay. It returns a *CallbackStatusError for a
// non-2xx answer. CallbackDeliveries is not changed.
func (s *Server) ResendCallback(runID string) error {
	c := &s.cb
	c.mu.Lock()
	rec := c.deliveries[runID]
	var body []byte
	var sig, url string
	if rec != nil {
		body, sig, url = slices.Clone(rec.body), rec.sig, rec.URL
	}
	closed := c.closed
	c.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case body == nil:
		return fmt.Errorf("fakezapier: no callback was sent for run %q", runID)
	}
	return s.sendOnce(url, body, sig)
}

// SendForgedCallback POSTs to url a well-formed callback for runID with the
// given status ("success" or "error") whose JWT carries the published kid
// and valid claims but is signed with another key, as an attacker would. It
// is sent once, synchronously; url is not validated. It returns a
// *CallbackStatusError for a non-2xx answer.
func (s *Server) SendForgedCallback(url, runID, status string) error {
	if s.closed() {
		return ErrClosed
	}
	data := map[string]any{"type": "run", "id": runID, "status": status, "results": []any{}, "errors": []any{}}
	if status == "error" {
		data["errors"] = []RunError{{Code: "system", Title: "Error", Detail: "The action failed."}}
	}
	body, err := json.Marshal(map[string]any{"data": data})
	if err != nil {
		return err
	}
	_, kid := s.cb.keys.signing()
	sig := signRS256(s.cb.keys.unpublished(), kid, runID, s.now().Unix())
	return s.sendOnce(url, body, sig)
}

func (s *Server) sendOnce(url string, body []byte, sig string) error {
	status, err := s.postCallback(s.cb.ctx, url, body, sig)
	if err != nil {
		return err
	}
	if status < 200 || status > 299 {
		return &CallbackStatusError{Status: status}
	}
	return nil
}

func (s *Server) closed() bool {
	s.cb.mu.Lock()
	defer s.cb.mu.Unlock()
	return s.cb.closed
}

// sleepCtx reports false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
