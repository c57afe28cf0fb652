package triggers

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/zapgate/caddy-zapier/webhooksig"
)

// Sender POSTs signed events to the partner's receiver (deliver_to).
type Sender struct {
	URL     string
	Signer  *webhooksig.Signer
	Client  *http.Client     // default: a client that follows no redirects
	Timeout time.Duration    // per attempt; default 10s
	Now     func() time.Time // default time.Now
}

// DeliveryError is a partner answer other than 2xx, or no answer.
type DeliveryError struct {
	Status int // 0 when there was no HTTP answer
	Err    error
}

func (e *DeliveryError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("the partner answered HTTP %d", e.Status)
	}
	return "the partner did not answer: " + e.Err.Error()
}

func (e *DeliveryError) Unwrap() error { return e.Err }

var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// Send POSTs body once, with webhook-id id and a fresh timestamp and
// signature. Only a 2xx answer is a success.
func (s *Sender) Send(ctx context.Context, id string, body []byte) error {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	client := s.Client
	if client == nil {
		client = noRedirects
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(body))
	if err != nil {
		return &DeliveryError{Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "caddy-zapier")
	s.Signer.SetHeaders(req.Header, id, now(), body)
	resp, err := client.Do(req)
	if err != nil {
		return &DeliveryError{Err: err}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &DeliveryError{Status: resp.StatusCode}
	}
	return nil
}
