package mcpgateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/zapgate/caddy-zapier/gateway"
)

// An aggregate session survives on any gateway sharing the storage, so a
// load balancer need not be sticky. Its id is self-contained: sealed (the
// gateway's Namespace, bound to the identity's subject, so it opens for no
// one else) and carrying what the client said in initialize — protocol
// version, capabilities, client info. A gateway that does not hold the
// session replays that initialize into its SDK server under the same id
// and serves the request. What the id cannot carry lives in the shared
// storage, one small record per session: when it was last used (so an idle
// session expires on every gateway) and that it still exists (DELETE,
// eviction past the identity's cap and offboarding delete it).

const (
	sessionIDPrefix = "a1."
	sessionLabel    = "caddy-zapier mcp aggregate session v1"
	// maxSessionParams bounds the initialize params an id carries.
	maxSessionParams = 2048
)

// sessionClaims is what a sealed session id carries.
type sessionClaims struct {
	N string          `json:"n"` // random; names the shared record
	C int64           `json:"c"` // created, Unix nanoseconds
	P json.RawMessage `json:"p"` // the client's initialize params, trimmed
}

// sessionRecord is a session's shared record (sealed, the key as aad).
type sessionRecord struct {
	Tenant  string `json:"t"`
	User    string `json:"u"`
	Created int64  `json:"c"`
	Seen    int64  `json:"s"` // last use, Unix nanoseconds (written at most every touchEvery)
}

var (
	localNSOnce sync.Once
	localNS     *gateway.Namespace
)

// sealer is the Namespace that seals ids and records: the store's (shared
// by every gateway of the storage), else one of this process.
func (a *Aggregator) sealer() *gateway.Namespace {
	if ns := a.Tokens.Store().Owners; ns != nil {
		return ns
	}
	localNSOnce.Do(func() {
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		localNS = gateway.NewNamespace(gateway.NamesKeyFunc(func(context.Context) ([]byte, error) { return key, nil }))
	})
	return localNS
}

// trimInitialize keeps what a replayed initialize needs of the client's
// params: protocol version, capabilities, client info (within
// maxSessionParams; past it, the version and capabilities only, then the
// version only).
func trimInitialize(params json.RawMessage) json.RawMessage {
	var p struct {
		ProtocolVersion string          `json:"protocolVersion"`
		Capabilities    json.RawMessage `json:"capabilities,omitempty"`
		ClientInfo      json.RawMessage `json:"clientInfo,omitempty"`
	}
	if json.Unmarshal(params, &p) != nil {
		return nil
	}
	for range 3 {
		out, err := json.Marshal(p)
		if err == nil && len(out) <= maxSessionParams {
			return out
		}
		if p.ClientInfo != nil {
			p.ClientInfo = json.RawMessage(`{"name":"client","version":"0"}`)
		} else {
			p.Capabilities = nil
		}
	}
	return nil
}

// initializeParams finds the params of an initialize request in body.
func initializeParams(body []byte) json.RawMessage {
	var m struct {
		Method string          `json:"method"`
		Params json.RawMessage `json:"params"`
	}
	if json.Unmarshal(body, &m) != nil || m.Method != "initialize" {
		return nil
	}
	return trimInitialize(m.Params)
}

// newSessionID seals a new session id for subject.
func (a *Aggregator) newSessionID(ctx context.Context, subject string, params json.RawMessage) (string, sessionClaims, error) {
	n := make([]byte, 16)
	_, _ = rand.Read(n)
	c := sessionClaims{N: hex.EncodeToString(n), C: a.now().UnixNano(), P: params}
	plain, err := json.Marshal(c)
	if err != nil {
		return "", c, err
	}
	sealed, err := a.sealer().Seal(ctx, sessionLabel, plain, []byte(subject))
	if err != nil {
		return "", c, err
	}
	return sessionIDPrefix + sealed, c, nil
}

// openSessionID opens id for subject: false for an id of another
// identity, of another storage, or not one at all.
func (a *Aggregator) openSessionID(ctx context.Context, subject, id string) (sessionClaims, bool) {
	var c sessionClaims
	sealed, ok := strings.CutPrefix(id, sessionIDPrefix)
	if !ok || len(id) > 8192 {
		return c, false
	}
	plain, err := a.sealer().Open(ctx, sessionLabel, sealed, []byte(subject))
	if err != nil || json.Unmarshal(plain, &c) != nil || len(c.N) != 32 {
		return c, false
	}
	return c, true
}

// sessionsPrefix is where the shared session records live: beside the
// token records.
func (a *Aggregator) sessionsPrefix() string {
	p := a.Tokens.Store().prefix
	if d := path.Dir(p); d != "." && d != "/" {
		return d + "/sessions"
	}
	return p + "_sessions"
}

func (a *Aggregator) recordKey(subject, n string) string {
	return a.sessionsPrefix() + "/" + subject + "/" + n
}

// touchEvery is how often a session in use rewrites its last use: the
// shared record lags at most this much, and an idle session expires
// between IdleTimeout and IdleTimeout+touchEvery after its last request.
func (a *Aggregator) touchEvery() time.Duration { return a.idleTimeout() / 8 }

func (a *Aggregator) putRecord(ctx context.Context, key string, rec sessionRecord) error {
	plain, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	sealed, err := a.sealer().Seal(ctx, sessionLabel+" record", plain, []byte(key))
	if err != nil {
		return err
	}
	return a.Tokens.Store().kv.Store(ctx, key, []byte(sealed))
}

func (a *Aggregator) loadRecord(ctx context.Context, key string) (*sessionRecord, error) {
	data, err := a.Tokens.Store().kv.Load(ctx, key)
	if err != nil {
		return nil, err
	}
	plain, err := a.sealer().Open(ctx, sessionLabel+" record", string(data), []byte(key))
	if err != nil {
		return nil, err
	}
	rec := new(sessionRecord)
	if err := json.Unmarshal(plain, rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// expired reports whether a session last used at seen has been idle too
// long.
func (a *Aggregator) expired(seen int64, now time.Time) bool {
	return now.Sub(time.Unix(0, seen)) > a.idleTimeout()+a.touchEvery()
}

// created records a new session of id and enforces the identity's cap
// across gateways: past it, the records of its oldest sessions go (every
// gateway then refuses them). It returns the sessions it evicted.
func (a *Aggregator) created(ctx context.Context, id Identity, subject string, c sessionClaims) ([]string, error) {
	now := a.now()
	if err := a.putRecord(ctx, a.recordKey(subject, c.N), sessionRecord{Tenant: id.Tenant, User: id.User, Created: c.C, Seen: now.UnixNano()}); err != nil {
		return nil, err
	}
	keys, err := a.Tokens.Store().kv.List(ctx, a.sessionsPrefix()+"/"+subject, false)
	if err != nil {
		return nil, nil
	}
	type live struct {
		key     string
		created int64
	}
	var lives []live
	for _, key := range keys {
		rec, err := a.loadRecord(ctx, key)
		if err != nil {
			continue
		}
		if a.expired(rec.Seen, now) {
			_ = a.Tokens.Store().kv.Delete(ctx, key)
			continue
		}
		lives = append(lives, live{key, rec.Created})
	}
	sort.Slice(lives, func(i, j int) bool {
		if lives[i].created != lives[j].created {
			return lives[i].created < lives[j].created
		}
		return lives[i].key < lives[j].key
	})
	var evicted []string
	for len(lives) > a.perIdentity() {
		_ = a.Tokens.Store().kv.Delete(ctx, lives[0].key)
		evicted = append(evicted, path.Base(lives[0].key))
		lives = lives[1:]
	}
	return evicted, nil
}

// errSessionGone is a session whose shared record is gone or expired.
var errSessionGone = errors.New("mcpgateway: the MCP session ended")

// touch checks that the session still exists and is not idle-expired on
// any gateway, and records its use. A storage failure is returned as is
// (the caller answers 500, not 404: the session may well exist).
func (a *Aggregator) touch(ctx context.Context, subject, n string) error {
	key := a.recordKey(subject, n)
	rec, err := a.loadRecord(ctx, key)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, gateway.ErrSealed) {
		return errSessionGone
	}
	if err != nil {
		return err
	}
	now := a.now()
	if a.expired(rec.Seen, now) {
		_ = a.Tokens.Store().kv.Delete(ctx, key)
		return errSessionGone
	}
	rec.Seen = now.UnixNano()
	return a.putRecord(ctx, key, *rec)
}

// now is the time of the shared records (clock, for tests).
func (a *Aggregator) now() time.Time {
	if a.clock != nil {
		return a.clock()
	}
	return time.Now()
}

// idleEverywhere ends, on every gateway, a session idle here for
// IdleTimeout when its shared record says no other gateway served it
// meanwhile either (its last write is as old, to within touchEvery); a
// session served elsewhere keeps its record and is only closed here.
func (a *Aggregator) idleEverywhere(subject, n string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key := a.recordKey(subject, n)
	rec, err := a.loadRecord(ctx, key)
	if err != nil {
		return
	}
	if a.now().Sub(time.Unix(0, rec.Seen)) >= a.idleTimeout()-a.touchEvery() {
		_ = a.Tokens.Store().kv.Delete(ctx, key)
	}
}

// ended deletes the session's shared record: every gateway refuses it.
func (a *Aggregator) ended(ctx context.Context, subject, n string) error {
	err := a.Tokens.Store().kv.Delete(ctx, a.recordKey(subject, n))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// forgetShared deletes the shared session records of the identities scope
// matches; it counts them.
func (a *Aggregator) forgetShared(ctx context.Context, scope gateway.Scope) (int, error) {
	kv := a.Tokens.Store().kv
	keys, err := kv.List(ctx, a.sessionsPrefix(), true)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, key := range keys {
		rec, err := a.loadRecord(ctx, key)
		if err != nil || !scope.Matches(gateway.Identity{Tenant: rec.Tenant, User: rec.User}) {
			continue
		}
		if err := kv.Delete(ctx, key); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// pendingSession is what admit needs for the session a request is
// creating (params) or restoring (id, claims).
type pendingSession struct {
	ctx       context.Context
	params    json.RawMessage
	restoreID string
	claims    sessionClaims // set by admit
}

func writeSessionNotFound(w http.ResponseWriter) {
	writeEnvelope(w, http.StatusNotFound, "mcp_session_not_found",
		"no such MCP session (it ended, was idle too long or was evicted by a newer one): initialize a new session")
}

// check makes sure the session still exists on every gateway: a session
// held here is checked (and its use recorded) at most every touchEvery; one
// held elsewhere, always. A session found gone is closed here too.
func (a *Aggregator) check(ctx context.Context, u *userAgg, s *aggSession, subject string, c sessionClaims) error {
	if s != nil {
		a.mu.Lock()
		now := a.now()
		due := now.Sub(s.touched) >= a.touchEvery()
		if due {
			s.touched = now
		}
		a.mu.Unlock()
		if !due {
			return nil
		}
	}
	err := a.touch(ctx, subject, c.N)
	if errors.Is(err, errSessionGone) && s != nil {
		a.mu.Lock()
		a.untrackLocked(s)
		a.mu.Unlock()
		u.closeServerSession(s.id, true)
	}
	return err
}

// restore opens, in u's SDK server, the session id another gateway made:
// its initialize is replayed with the params the id carries, under the
// same id, then its initialized notification.
func (a *Aggregator) restore(ctx context.Context, u *userAgg, id string, c sessionClaims) error {
	u.createMu.Lock()
	defer u.createMu.Unlock()
	if u.liveIDs()[id] {
		return nil // restored by a request that came at the same time
	}
	u.newSession = &pendingSession{ctx: ctx, restoreID: id, claims: c}
	defer func() { u.newSession = nil }()
	ctx = context.WithValue(context.WithoutCancel(ctx), userKey{}, u)
	send := func(body string, session string) int {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "/", strings.NewReader(body))
		if err != nil {
			return 0
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+u.subject)
		if session != "" {
			req.Header.Set("Mcp-Session-Id", session)
		}
		rec := &discardWriter{header: http.Header{}}
		a.handler.ServeHTTP(rec, req)
		return rec.status
	}
	params := c.P
	if len(params) == 0 {
		params = json.RawMessage(`{}`)
	}
	status := send(`{"jsonrpc":"2.0","id":"restore","method":"initialize","params":`+string(params)+`}`, "")
	a.initialized(u, id)
	if status != http.StatusOK || !u.liveIDs()[id] {
		return errSessionGone
	}
	if send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`, id) != http.StatusAccepted {
		u.closeServerSession(id, false)
		return errSessionGone
	}
	return nil
}

// discardWriter is the response of a replayed request: its status only.
type discardWriter struct {
	header http.Header
	status int
}

func (d *discardWriter) Header() http.Header { return d.header }

func (d *discardWriter) WriteHeader(code int) {
	if d.status == 0 {
		d.status = code
	}
}

func (d *discardWriter) Write(p []byte) (int, error) {
	d.WriteHeader(http.StatusOK)
	return len(p), nil
}

func (d *discardWriter) Flush() {}
