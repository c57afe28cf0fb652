package zapierapi

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Stream opens a Server-Sent Events stream (GET, Accept: text/event-stream)
// with a user's bearer token and calls onData with the payload of each data
// frame until the server ends the stream (nil), ctx ends, or nothing at all
// (not even a keep-alive comment) arrives for idle (nil: a dead connection;
// reconnect). A non-2xx answer is an *Error classified like every other
// call. It uses the client's transport, so opening a stream spends the
// request budget once.
func (c *Client) Stream(ctx context.Context, op, rawURL, bearer string, idle time.Duration, onData func(data []byte)) error {
	if err := CheckURL(rawURL); err != nil {
		return fmt.Errorf("%w: %s: url %v", ErrInvalidInput, op, err)
	}
	if bearer == "" || !visibleASCII(bearer) {
		return fmt.Errorf("%w: %s: bad bearer token", ErrInvalidInput, op)
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return &Error{Kind: KindFailed, Op: op, Err: err}
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("User-Agent", c.cfg.UserAgent)
	// The connection may only take cfg.Timeout to answer; then it lives
	// as long as frames keep coming.
	answered := time.AfterFunc(c.cfg.Timeout, cancel)
	resp, err := c.hc.Do(req)
	answered.Stop()
	if err != nil {
		if ctx.Err() != nil {
			return ctxError(ctx)
		}
		return &Error{Kind: KindFailed, Op: op, Err: fmt.Errorf("opening the stream: %w", err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
		code, desc := errorDetails(body, []string{bearer, c.cfg.ClientSecret})
		e := &Error{Kind: KindFailed, Op: op, StatusCode: resp.StatusCode, OAuthError: code, Description: desc}
		switch {
		case resp.StatusCode == http.StatusTooManyRequests:
			e.Kind, e.RetryAfter = KindRateLimited, c.RetryAfter(resp.Header.Get("Retry-After"))
		case resp.StatusCode >= 400 && resp.StatusCode < 500:
			e.Kind = KindRejected
		}
		return e
	}
	watchdog := time.AfterFunc(idle, cancel)
	defer watchdog.Stop()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 4096), maxBodyBytes)
	var data bytes.Buffer
	for sc.Scan() {
		watchdog.Reset(idle)
		line := sc.Bytes()
		switch {
		case len(line) == 0: // end of an event
			if data.Len() > 0 {
				onData(bytes.Clone(data.Bytes()))
				data.Reset()
			}
		case line[0] == ':': // comment: keep-alive
		case bytes.HasPrefix(line, []byte("data:")):
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.Write(bytes.TrimPrefix(bytes.TrimPrefix(line, []byte("data:")), []byte(" ")))
		}
	}
	if ctx.Err() != nil {
		return ctxError(ctx)
	}
	return nil // the server ended it, or it went silent: reconnect
}
