package fakezapier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// privateJWKMembers are JWK members that carry private or secret key
// material (RFC 7518 §6.2.2, §6.3.2, §6.4.1). A published JWKS must contain
// none of them.
var privateJWKMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

const maxJWKSBody = 1 << 20

// keySet is one fetched JWK Set. It is immutable once published in the cache.
type keySet struct {
	url       string
	fetchedAt time.Time
	etag      string
	keys      map[string]map[string]json.RawMessage // kid → JWK members
	// problem, if set, makes every verification against this set fail: the
	// set as a whole is unacceptable (private members, duplicate kid).
	problem string
}

// jwksCache fetches and caches the gateway's JWKS.
type jwksCache struct {
	s *Server

	fetchMu sync.Mutex // serialises fetches; waiting on it means "wait for the in-flight fetch"

	mu          sync.Mutex // guards below
	url         string
	set         *keySet
	missRefetch map[string]time.Time // kid → last refetch caused by it
}

func newJWKSCache(s *Server, url string) *jwksCache {
	return &jwksCache{s: s, url: url, missRefetch: map[string]time.Time{}}
}

func (c *jwksCache) setURL(u string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.url = u
	c.set = nil
	c.missRefetch = map[string]time.Time{}
}

func (c *jwksCache) current() (*keySet, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.set, c.url
}

func (c *jwksCache) fresh(set *keySet, url string) bool {
	return set != nil && set.url == url && c.s.now().Sub(set.fetchedAt) < c.s.cfg.JWKSMaxAge
}

// key returns the JWK with the given kid and the set it came from. It fetches
// the JWKS when none is cached or the cached one is too old, and refetches
// once (rate limited per kid) when the kid is unknown.
func (c *jwksCache) key(kid string) (map[string]json.RawMessage, *keySet, error) {
	set, url := c.current()
	if url == "" {
		return nil, nil, errors.New("no JWKS URL configured")
	}
	if !c.fresh(set, url) {
		var err error
		set, err = c.refresh(set)
		if set == nil {
			return nil, nil, err
		}
		// On a failed refresh keep using the previous (stale) set.
	}
	if k, ok := set.keys[kid]; ok {
		return k, set, nil
	}
	// Unknown kid: refetch once, unless this kid caused one very recently,
	// in which case wait for any in-flight fetch and use the newest set.
	var refreshErr error
	if c.allowMissRefetch(kid) {
		var next *keySet
		next, refreshErr = c.refresh(set)
		if next != nil {
			set = next
		}
	} else {
		c.fetchMu.Lock()
		c.fetchMu.Unlock() //nolint:staticcheck // empty critical section: wait for the in-flight fetch
		if cur, _ := c.current(); cur != nil {
			set = cur
		}
	}
	if k, ok := set.keys[kid]; ok {
		return k, set, nil
	}
	msg := fmt.Sprintf("unknown kid %q (JWKS has %s)", kid, kidList(set))
	if refreshErr != nil {
		msg += "; refetch failed: " + refreshErr.Error()
	}
	return nil, set, errors.New(msg)
}

func kidList(set *keySet) string {
	kids := make([]string, 0, len(set.keys))
	for k := range set.keys {
		kids = append(kids, fmt.Sprintf("%q", k))
	}
	sort.Strings(kids)
	if len(kids) == 0 {
		return "no keys"
	}
	return strings.Join(kids, ", ")
}

func (c *jwksCache) allowMissRefetch(kid string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.s.now()
	if last, ok := c.missRefetch[kid]; ok && now.Sub(last) < c.s.cfg.JWKSRefetchInterval {
		return false
	}
	if len(c.missRefetch) > 1000 { // bound memory against random kids
		c.missRefetch = map[string]time.Time{}
	}
	c.missRefetch[kid] = now
	return true
}

// refresh fetches the JWKS unless another goroutine replaced seen with a
// fresh set while this one waited. It returns the newest set (possibly the
// old one, when the fetch failed) and the fetch error.
func (c *jwksCache) refresh(seen *keySet) (*keySet, error) {
	c.fetchMu.Lock()
	defer c.fetchMu.Unlock()
	cur, url := c.current()
	if cur != seen && c.fresh(cur, url) {
		return cur, nil
	}
	if url == "" {
		return nil, errors.New("no JWKS URL configured")
	}
	next, err := c.fetch(url, cur)
	if err != nil {
		c.s.logf("fakezapier: jwks fetch %s failed: %v", url, err)
		if cur != nil && cur.url == url {
			return cur, err
		}
		return nil, err
	}
	c.mu.Lock()
	if c.url == url { // not changed by SetJWKSURL meanwhile
		c.set = next
	}
	c.mu.Unlock()
	return next, nil
}

func (c *jwksCache) fetch(url string, prev *keySet) (*keySet, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	req.Header.Set("User-Agent", "fakezapier-jwks/1")
	if prev != nil && prev.url == url && prev.etag != "" {
		req.Header.Set("If-None-Match", prev.etag)
	}
	c.s.count(func(st *Stats) { st.JWKSFetches++ })
	resp, err := c.s.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotModified && prev != nil && prev.url == url && prev.etag != "" {
		c.s.count(func(st *Stats) { st.JWKSNotModified++ })
		next := *prev
		next.fetchedAt = c.s.now()
		if et := resp.Header.Get("ETag"); et != "" {
			next.etag = et
		}
		c.s.logf("fakezapier: jwks fetch %s: 304 not modified", url)
		return &next, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("JWKS answered HTTP %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBody+1))
	if err != nil {
		return nil, fmt.Errorf("reading JWKS: %w", err)
	}
	if len(body) > maxJWKSBody {
		return nil, errors.New("JWKS larger than 1 MiB")
	}
	set, err := parseKeySet(body)
	if err != nil {
		return nil, err
	}
	set.url = url
	set.fetchedAt = c.s.now()
	set.etag = resp.Header.Get("ETag")
	c.s.logf("fakezapier: jwks fetch %s: %d keys (%s)", url, len(set.keys), kidList(set))
	return set, nil
}

// parseKeySet parses a JWK Set document. Structural errors are returned as
// errors; a set that parses but must never be used (private members,
// duplicate kid) is returned with problem set.
func parseKeySet(body []byte) (*keySet, error) {
	var doc struct {
		Keys []map[string]json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("JWKS is not a JSON JWK Set: %v", err)
	}
	if doc.Keys == nil {
		return nil, errors.New(`JWKS has no "keys" array`)
	}
	set := &keySet{keys: map[string]map[string]json.RawMessage{}}
	var problems []string
	for i, k := range doc.Keys {
		kid, _ := jwkString(k, "kid")
		name := kid
		if name == "" {
			name = fmt.Sprintf("#%d", i)
		}
		for _, m := range privateJWKMembers {
			if _, ok := k[m]; ok {
				problems = append(problems, fmt.Sprintf("JWKS key %q publishes private member %q", name, m))
			}
		}
		if kid == "" {
			continue // cannot be selected by a JWT header
		}
		if _, dup := set.keys[kid]; dup {
			problems = append(problems, fmt.Sprintf("JWKS has duplicate kid %q", kid))
			continue
		}
		set.keys[kid] = k
	}
	set.problem = strings.Join(problems, "; ")
	return set, nil
}

// jwkString returns the string member name of a JWK; ok is false when it is
// absent. A present member that is not a string yields ("", true) and is
// caught by the callers' validation.
func jwkString(k map[string]json.RawMessage, name string) (string, bool) {
	raw, ok := k[name]
	if !ok {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", true
	}
	return s, true
}
