package zapierapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/zapgate/caddy-zapier/budget"
)

// call describes one logical request, sent up to MaxAttempts times.
type call struct {
	op      string // names the operation in errors
	method  string
	url     string
	header  http.Header
	body    []byte
	retry   bool     // transient failures may be retried (the request is safe to repeat)
	secrets []string // redacted from any text Zapier sends back
	// handle consumes a 2xx body; start is Now() taken just before sending.
	// Its error marks the response as malformed (transient).
	handle func(status int, body []byte, start time.Time) error
}

// run sends cl with bounded, jittered retries inside ctx's deadline.
func (c *Client) run(ctx context.Context, cl *call) error {
	maxAttempts := c.cfg.MaxAttempts
	if !cl.retry {
		maxAttempts = 1
	}
	for attempt := 1; ; attempt++ {
		e, transient := c.attempt(ctx, cl)
		if e == nil {
			return nil
		}
		e.Op, e.Attempts = cl.op, attempt
		e.OAuthError = redact(e.OAuthError, cl.secrets)
		e.Description = redact(e.Description, cl.secrets)
		if !transient || attempt >= maxAttempts {
			return e
		}
		delay := c.backoff(attempt)
		if e.RetryAfter > 0 { // a 5xx asking for a pause: honour it or give up
			if e.RetryAfter > c.backoffCap {
				return e
			}
			delay = max(delay, e.RetryAfter)
		}
		// Never sleep past the caller's deadline: a retry that cannot
		// start in time is pointless, so report the real failure now.
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < delay {
			return e
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			ce := ctxError(ctx)
			ce.Op, ce.Attempts = cl.op, attempt
			return ce
		case <-t.C:
		}
	}
}

// backoff is exponential from backoffBase, capped, with "equal jitter"
// (between half and all of the step) so retries of many callers spread out.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.backoffCap
	if attempt < 30 {
		if s := c.backoffBase << (attempt - 1); s > 0 && s < d {
			d = s
		}
	}
	return d/2 + rand.N(d/2+1)
}

// ctxError reports the caller's context ending: a deadline is a timeout,
// a cancellation is a failure carrying context.Canceled.
func ctxError(ctx context.Context) *Error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return &Error{Kind: KindTimeout, Err: err}
	}
	return &Error{Kind: KindFailed, Err: err}
}

// attempt sends cl once. It reports whether a failure is worth retrying.
func (c *Client) attempt(ctx context.Context, cl *call) (*Error, bool) {
	actx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var body io.Reader
	if cl.body != nil {
		body = bytes.NewReader(cl.body)
	}
	req, err := http.NewRequestWithContext(actx, cl.method, cl.url, body)
	if err != nil {
		return &Error{Kind: KindFailed, Err: fmt.Errorf("building request: %w", err)}, false
	}
	for k, v := range cl.header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.cfg.UserAgent)

	start := c.cfg.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		return transportError(ctx, actx, err)
	}
	defer func() {
		// Drain (bounded) so the connection can be reused.
		_, _ = io.CopyN(io.Discard, resp.Body, maxBodyBytes)
		_ = resp.Body.Close()
	}()

	code := resp.StatusCode
	if code >= 200 && code <= 299 {
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes+1))
		if err != nil {
			return transportError(ctx, actx, err)
		}
		if len(b) > maxBodyBytes {
			return &Error{Kind: KindFailed, StatusCode: code, Err: errors.New("response body too large")}, true
		}
		if err := cl.handle(code, b, start); err != nil {
			e, ok := AsError(err)
			if !ok {
				e = &Error{Kind: KindFailed, Err: err}
			}
			e.StatusCode = code
			return e, true
		}
		return nil, false
	}

	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes)) // best effort: only for details
	e := &Error{StatusCode: code}
	e.OAuthError, e.Description = errorDetails(b, cl.secrets)
	switch {
	case code == http.StatusTooManyRequests:
		e.Kind = KindRateLimited
		e.RetryAfter = c.RetryAfter(resp.Header.Get("Retry-After"))
		return e, false
	case code >= 400 && code <= 499:
		e.Kind = KindRejected
		return e, false
	case code >= 500:
		e.Kind = KindFailed
		e.RetryAfter = c.RetryAfter(resp.Header.Get("Retry-After"))
		return e, true
	default: // 1xx/3xx: redirects are deliberately not followed
		e.Kind = KindFailed
		e.Err = errors.New("unexpected HTTP status")
		return e, false
	}
}

// transportError classifies an error from sending or reading. The caller's
// context ending is final; a per-attempt timeout or a network error is not.
func transportError(ctx, actx context.Context, err error) (*Error, bool) {
	if ctx.Err() != nil {
		return ctxError(ctx), false
	}
	// The gateway's own request budget held the call back: not Zapier's
	// failure, and not worth an immediate retry.
	var ee *budget.ExhaustedError
	if errors.As(err, &ee) {
		return &Error{Kind: KindUnavailable, RetryAfter: ee.RetryAfter, Description: "request budget exhausted", Err: ee}, false
	}
	var ne net.Error
	if errors.Is(actx.Err(), context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return &Error{Kind: KindTimeout, Err: err}, true
	}
	return &Error{Kind: KindFailed, Err: err}, true
}

// MaxRetryAfter caps a Retry-After Zapier sends: its documented cooldown is
// 60 s, so a value of hours is a fault, not an instruction to stop for that
// long.
const MaxRetryAfter = 10 * time.Minute

// RetryAfter parses Retry-After (delta-seconds or HTTP-date); 0 when absent,
// invalid or already past. It never makes a value up.
func (c *Client) RetryAfter(v string) time.Duration {
	const limit = MaxRetryAfter
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(min(n, int64(limit/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(c.cfg.Now()); d > 0 {
			return min(d, limit)
		}
	}
	return 0
}

// errorDetails extracts the error code and description from an OAuth error
// body ({"error","error_description"}) or Zapier's API error envelope
// ({"errors":[{"code","detail"}]}).
func errorDetails(body []byte, secrets []string) (code, desc string) {
	var v struct {
		Error            json.RawMessage `json:"error"`
		ErrorDescription json.RawMessage `json:"error_description"`
		Errors           []struct {
			Code   json.RawMessage `json:"code"`
			Title  json.RawMessage `json:"title"`
			Detail json.RawMessage `json:"detail"`
		} `json:"errors"`
	}
	if len(body) == 0 || json.Unmarshal(body, &v) != nil {
		return "", ""
	}
	code, _ = jsonString(v.Error)
	desc, _ = jsonString(v.ErrorDescription)
	if code == "" && len(v.Errors) > 0 {
		code, _ = jsonString(v.Errors[0].Code)
		if desc, _ = jsonString(v.Errors[0].Detail); desc == "" {
			desc, _ = jsonString(v.Errors[0].Title)
		}
	}
	return clean(code, maxCodeBytes, secrets), clean(desc, maxDescBytes, secrets)
}

// doJSON calls a Zapier JSON API with a bearer token: in (if not nil) is sent
// as the JSON body, a 2xx body is decoded into out (if not nil). Only
// idempotent methods are retried, so a run is never created twice.
func (c *Client) doJSON(ctx context.Context, op, method, rawURL, bearer string, in, out any) error {
	if err := CheckURL(rawURL); err != nil {
		return fmt.Errorf("%w: %s: url %v", ErrInvalidInput, op, err)
	}
	if bearer == "" || !visibleASCII(bearer) {
		return fmt.Errorf("%w: %s: bad bearer token", ErrInvalidInput, op)
	}
	cl := &call{
		op:      op,
		method:  method,
		url:     rawURL,
		header:  http.Header{"Authorization": {"Bearer " + bearer}},
		secrets: []string{bearer, c.cfg.ClientSecret},
	}
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete, http.MethodOptions:
		cl.retry = true
	}
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%w: %s: encoding body: %v", ErrInvalidInput, op, err)
		}
		cl.body = b
		cl.header.Set("Content-Type", "application/json")
	}
	cl.handle = func(status int, body []byte, _ time.Time) error {
		if out == nil || status == http.StatusNoContent {
			return nil
		}
		if err := json.Unmarshal(body, out); err != nil {
			return errors.New("malformed JSON response") // the decoder's text could quote the body
		}
		return nil
	}
	return c.run(ctx, cl)
}
