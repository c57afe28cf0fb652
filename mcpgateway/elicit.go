package mcpgateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/zapgate/caddy-zapier/gateway"
)

// Connecting from inside a tool call (URL-mode elicitation, MCP
// 2025-11-25): a tool call of an app the user has not authorized, or whose
// authorization expired, is answered with error -32042 carrying a
// single-use link to the authorize flow, bound to the user; an agent that
// did not declare elicitation.url gets a tool error whose text carries the
// link. Once the user has authorized, the next call succeeds and the
// sessions waiting for it hear notifications/elicitation/complete.

// DefaultLinkTTL is how long an authorize link may wait to be opened.
const DefaultLinkTTL = 10 * time.Minute

// ExpiredTools says what tools/list does with the tools of an app whose
// authorization expired.
const (
	ExpiredMark = "mark" // listed, their description says so (the default)
	ExpiredHide = "hide" // left out (a call still answers with the link)
)

// expiredNote ends the description of a tool whose authorization expired.
const expiredNote = " (authorization expired: calling this tool returns a link for the user to authorize the app again)"

// maxPendingElicitations bounds the elicitations a user's sessions wait
// on per app (the oldest are forgotten).
const maxPendingElicitations = 16

// linksPrefix is where the links' one-time tokens are kept:
// <prefix>/<tenant name>/<identity name>/<token hash>.
const linksPrefix = "zapier/mcp/links"

// ConnectFunc issues a single-use authorize link for (id, app), naming the
// elicitation it answers; it returns the link and the app's id.
type ConnectFunc func(ctx context.Context, id Identity, app, elicitationID string) (link, appID string, err error)

// pendingElicitation is a session waiting for an app's authorization.
type pendingElicitation struct {
	session *mcp.ServerSession
	id      string
}

// authorizationRequired answers a tool call of app the user must
// authorize (again): -32042 with a link for an agent that handles URL
// elicitation, else a tool error whose text carries the link.
func (u *userAgg) authorizationRequired(ctx context.Context, req *mcp.CallToolRequest, app string) (*mcp.CallToolResult, error) {
	res, err, ok := u.elicitAuthorization(ctx, req, app)
	if !ok {
		return toolError("mcp_authorization_required: the user must authorize " + app + " (again) before its tools can be called"), nil
	}
	return res, err
}

// elicitAuthorization issues a link for app and answers with it; ok is
// false when no link can be issued (no such app, no link configured).
func (u *userAgg) elicitAuthorization(ctx context.Context, req *mcp.CallToolRequest, app string) (*mcp.CallToolResult, error, bool) {
	if u.a.Connect == nil {
		return nil, nil, false
	}
	eid := rand.Text()
	link, appID, err := u.a.Connect(ctx, u.id, app, eid)
	if err != nil {
		return nil, nil, false
	}
	if !urlElicitation(req.Session) {
		return toolError("mcp_authorization_required: the user must authorize " + app + " before its tools can be called: send them to " +
			link + " (it works once, for this user only), then call the tool again"), nil, true
	}
	u.poolMu.Lock()
	if u.pending == nil {
		u.pending = map[string][]pendingElicitation{}
	}
	p := append(u.pending[appID], pendingElicitation{session: req.Session, id: eid})
	if len(p) > maxPendingElicitations {
		p = p[len(p)-maxPendingElicitations:]
	}
	u.pending[appID] = p
	u.poolMu.Unlock()
	return nil, mcp.URLElicitationRequiredError([]*mcp.ElicitParams{{Mode: "url", URL: link, ElicitationID: eid,
		Message: "Authorize " + app + " to let the agent use its tools (this link works once, for you only)."}}), true
}

func toolError(text string) *mcp.CallToolResult {
	return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: text}}}
}

// urlElicitation reports whether the agent declared elicitation.url.
func urlElicitation(ss *mcp.ServerSession) bool {
	if ss == nil {
		return false
	}
	p := ss.InitializeParams()
	return p != nil && p.Capabilities != nil && p.Capabilities.Elicitation != nil && p.Capabilities.Elicitation.URL != nil
}

// unlistedCall answers a tools/call of a tool not listed whose name is
// <app>__<tool> for an app the user has not authorized (or whose
// authorization expired, its tools hidden); ok is false for any other name.
func (u *userAgg) unlistedCall(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error, bool) {
	if u.a.Connect == nil || req.Params == nil {
		return nil, nil, false
	}
	u.mu.Lock()
	_, listed := u.routes[req.Params.Name]
	u.mu.Unlock()
	app, tool, ok := strings.Cut(req.Params.Name, "__")
	if listed || !ok || tool == "" || !gateway.ValidAppName(app) {
		return nil, nil, false
	}
	u.mu.Lock()
	expired := u.expired[app]
	u.mu.Unlock()
	rec, err := u.a.Tokens.Store().Get(ctx, u.id, app)
	if err != nil {
		return nil, nil, false
	}
	if rec != nil {
		_, err := u.a.Tokens.Current(ctx, u.id, app)
		if err == nil {
			// Authorized: if that happened (perhaps through another
			// sidecar) after the tool list was built, the list is rebuilt
			// and the call goes on to the tool if the app has it.
			u.mu.Lock()
			stale := expired || u.known[app] == nil
			if stale {
				u.expired[app], u.listed = false, time.Time{}
			}
			u.mu.Unlock()
			if stale {
				u.sync(ctx, false)
			}
			return nil, nil, false
		}
		if !expired && !errors.Is(err, ErrAuthorizationRequired) {
			return nil, nil, false
		}
	}
	return u.elicitAuthorization(ctx, req, app)
}

// Forgotten tells the aggregate endpoint id forgot app: its tools are
// not listed any more, not even as expired.
func (a *Aggregator) Forgotten(id Identity, app string) {
	a.Invalidate(id)
	u := a.userOf(id)
	if u == nil {
		return
	}
	u.mu.Lock()
	delete(u.known, app)
	delete(u.expired, app)
	u.mu.Unlock()
}

// Authorized tells the aggregate endpoint id has just authorized app: the
// tool set is rebuilt on the next request, and the sessions waiting on
// the authorization hear notifications/elicitation/complete.
func (a *Aggregator) Authorized(id Identity, app string) {
	a.Invalidate(id)
	u := a.userOf(id)
	if u == nil {
		return
	}
	u.poolMu.Lock()
	pending := u.pending[app]
	delete(u.pending, app)
	u.poolMu.Unlock()
	for _, p := range pending {
		_ = p.session.NotifyElicitationComplete(context.Background(), &mcp.ElicitationCompleteParams{ElicitationID: p.id})
	}
}

// linkRecord is what a link's one-time token keeps: never the identity
// (the storage key names it by keyed hash only).
type linkRecord struct {
	App           string    `json:"app"`
	ElicitationID string    `json:"elicitation_id,omitempty"`
	Expires       time.Time `json:"expires"`
}

// linkStore keeps the one-time tokens of authorize links.
type linkStore struct {
	kv    KV
	names *gateway.Namespace
	ttl   time.Duration
}

func (l *linkStore) dir(ctx context.Context, id gateway.Identity) (string, error) {
	tenant, err := l.names.TenantName(ctx, id.Tenant)
	if err != nil {
		return "", err
	}
	name, err := l.names.Name(ctx, id)
	if err != nil {
		return "", err
	}
	return linksPrefix + "/" + tenant + "/" + name, nil
}

func tokenHash(token string) string {
	sum := sha256.Sum256([]byte("caddy-zapier mcp link\x00" + token))
	return hex.EncodeToString(sum[:])
}

// issue stores a new one-time token for (id, app) and returns it; the
// user's expired tokens are swept on the way.
func (l *linkStore) issue(ctx context.Context, id gateway.Identity, app, elicitationID string) (string, error) {
	dir, err := l.dir(ctx, id)
	if err != nil {
		return "", err
	}
	now := time.Now()
	if keys, err := l.kv.List(ctx, dir, false); err == nil {
		for _, key := range keys {
			if rec, err := l.load(ctx, key); err == nil && now.After(rec.Expires) {
				_ = l.kv.Delete(ctx, key)
			}
		}
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	token := base64.RawURLEncoding.EncodeToString(b)
	data, err := json.Marshal(linkRecord{App: app, ElicitationID: elicitationID, Expires: now.Add(l.ttl)})
	if err != nil {
		return "", err
	}
	return token, l.kv.Store(ctx, dir+"/"+tokenHash(token), data)
}

func (l *linkStore) load(ctx context.Context, key string) (linkRecord, error) {
	var rec linkRecord
	data, err := l.kv.Load(ctx, key)
	if err != nil {
		return rec, err
	}
	return rec, json.Unmarshal(data, &rec)
}

// errLinkInvalid: no such token for this user (another user's, used,
// expired, or never issued).
var errLinkInvalid = &gateway.Error{Status: http.StatusBadRequest, Code: "mcp_link_invalid",
	Message: "the authorize link is invalid, expired, already used, or another user's: ask the agent for a new one"}

// spend uses id's token once: it is deleted before its app is returned.
func (l *linkStore) spend(ctx context.Context, id gateway.Identity, token string) (linkRecord, error) {
	if token == "" || len(token) > 128 {
		return linkRecord{}, errLinkInvalid
	}
	dir, err := l.dir(ctx, id)
	if err != nil {
		return linkRecord{}, err
	}
	key := dir + "/" + tokenHash(token)
	if locker, ok := l.kv.(Locker); ok {
		name := "zapier_mcp_link_" + tokenHash(token)
		if err := locker.Lock(ctx, name); err != nil {
			return linkRecord{}, err
		}
		defer func() { _ = locker.Unlock(context.WithoutCancel(ctx), name) }()
	}
	rec, err := l.load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return linkRecord{}, errLinkInvalid
	}
	if err != nil {
		return linkRecord{}, err
	}
	if err := l.kv.Delete(ctx, key); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return linkRecord{}, err
	}
	if time.Now().After(rec.Expires) {
		return linkRecord{}, errLinkInvalid
	}
	return rec, nil
}

// LinkStore forgets the users' authorize links (gateway.UserStore).
type LinkStore struct{ links *linkStore }

// StoreName implements gateway.UserStore.
func (LinkStore) StoreName() string { return "mcp_links" }

// Forget implements gateway.UserStore.
func (s LinkStore) Forget(ctx context.Context, scope gateway.Scope) (gateway.StoreReport, error) {
	var rep gateway.StoreReport
	if s.links == nil {
		return rep, nil
	}
	if scope.Tenant == "" {
		return rep, errors.New("mcp_links: no tenant")
	}
	tenant, err := s.links.names.TenantName(ctx, scope.Tenant)
	if err != nil {
		return rep, err
	}
	dirs := []string{linksPrefix + "/" + tenant}
	if scope.User != "" {
		dir, err := s.links.dir(ctx, gateway.Identity{Tenant: scope.Tenant, User: scope.User})
		if err != nil {
			return rep, err
		}
		dirs = []string{dir}
	}
	var errs []error
	for _, dir := range dirs {
		keys, err := s.links.kv.List(ctx, dir, true)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return rep, fmt.Errorf("listing MCP authorize links: %w", err)
		}
		for _, key := range keys {
			if len(path.Base(key)) != 64 { // a user's directory
				continue
			}
			if err := s.links.kv.Delete(ctx, key); err != nil && !errors.Is(err, fs.ErrNotExist) {
				rep.Failed++
				errs = append(errs, err)
				continue
			}
			rep.Deleted++
		}
		_ = s.links.kv.Delete(ctx, dir)
	}
	return rep, errors.Join(errs...)
}

// connectLink is the Aggregator's ConnectFunc: the app resolved in the
// White Label list, a one-time token stored, the link to authorize with it.
func (h *Handler) connectLink(ctx context.Context, id Identity, app, elicitationID string) (string, string, error) {
	if h.links == nil || h.authBase == "" {
		return "", "", errors.New("no authorize links: no namespace or callback URL")
	}
	gid := gateway.Identity{Tenant: id.Tenant, User: id.User}
	a, err := h.resolveApp(ctx, gid, app)
	if err != nil {
		return "", "", err
	}
	token, err := h.links.issue(ctx, gid, a.ID, elicitationID)
	if err != nil {
		return "", "", err
	}
	return h.authBase + "?" + url.Values{"link": {token}}.Encode(), a.ID, nil
}
