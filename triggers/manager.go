package triggers

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// Defaults of Config.
const (
	DefaultLeaseLimit    = 10
	DefaultAttempts      = 3
	DefaultMaxLeases     = 3
	DefaultRetryBase     = 500 * time.Millisecond
	DefaultRetryMax      = 10 * time.Second
	DefaultBackoffMax    = time.Minute
	DefaultDrainInterval = 5 * time.Minute
	DefaultMaxConcurrent = 8
	// DefaultLockWait is above the 2s after which Caddy's file storage
	// treats an empty lock file (its holder died mid-update) as stale.
	DefaultLockWait = 3 * time.Second
	DefaultLockTTL  = 10 * time.Second
	// DefaultMaxSubscriptionsPerUser caps one user's subscriptions (each
	// is an inbox at Zapier and a drain here).
	DefaultMaxSubscriptionsPerUser = 50
)

// Config configures a Manager.
type Config struct {
	API     *InboxAPI
	Sender  *Sender
	Storage Storage
	// Names gives the key that names users at rest (gateway.Namespace):
	// storage paths are keyed names, owners are sealed. Required.
	Names gateway.NamesKeySource
	// MaxSubscriptionsPerUser: a new subscription past it is
	// ErrSubscriptionLimit (changing an existing one is not). Default 50.
	MaxSubscriptionsPerUser int
	// NotificationURL is registered on every inbox (§3.8); "" for none.
	NotificationURL string
	// NotifyKey, when set, adds a per-inbox token (an HMAC of the inbox key)
	// to the registered notification URL as ?inbox_token=, and Notify
	// ignores notifications without the right one.
	NotifyKey []byte
	// Stream watches every subscription's inbox events stream (§3.9): a
	// drain on each (re)connect and each frame. One connection per
	// subscription; reconnects back off 0.5s, 1s, 2s, 5s; a refused
	// stream (4xx) falls back to notifications and the safety drain.
	Stream bool
	// StreamIdle: a stream silent this long (no frame, no keep-alive) is
	// dead and reopened. Default 60s.
	StreamIdle time.Duration
	// LeaseLimit is the batch size of one lease. Default 10.
	LeaseLimit int
	// Attempts is how many times one message is POSTed within one lease
	// before it is released. Default 3.
	Attempts int
	// MaxLeases: a message whose delivery still fails on its MaxLeases-th
	// lease goes to the dead letters (and is acked at Zapier). Default 3,
	// below Zapier's own quarantine limit.
	MaxLeases int
	// RetryBase and RetryMax bound the pause between two attempts (doubling).
	RetryBase, RetryMax time.Duration
	// BackoffMax caps the pause of a subscription whose partner keeps failing.
	BackoffMax time.Duration
	// DrainInterval is the safety drain: every subscription is drained this
	// often even without a notification. Default 5m.
	DrainInterval time.Duration
	// MaxConcurrent bounds the subscriptions drained at once; within one
	// subscription messages are delivered one at a time, in order.
	MaxConcurrent int
	// LockWait is how long a drain waits for the subscription's drain
	// lock (drainlock.go); a drain that cannot get it leaves the work to
	// its holder.
	LockWait time.Duration
	// LockTTL: a drain holds the subscription's drain lock as a lease in
	// storage that it renews every LockTTL/3; the lease of a gateway that
	// died holding it is taken over LockTTL after its last renewal.
	// Default 10s.
	LockTTL time.Duration
	Now     func() time.Time
	// Sleep waits between attempts (tests make it instant).
	Sleep    func(ctx context.Context, d time.Duration) error
	Observer Observer
	Logger   *zap.Logger
	// IdentityHash names a user in logs (never the identity itself).
	IdentityHash func(Identity) string
}

// Observer receives the delivery loop's outcomes, for metrics.
type Observer interface {
	// Delivery: one POST to the partner: delivered or failed; or a message
	// dead_lettered.
	Delivery(outcome string, took time.Duration)
	// Ack: acked, lease_expired or failed; release: released.
	Ack(outcome string)
	// Lease: messages, empty, paused, gone or failed.
	Lease(outcome string)
}

// DeliveryObserver is an Observer that also hears whose event was
// delivered (usage counts trigger events per tenant and user).
type DeliveryObserver interface {
	Delivered(id Identity)
}

type nopObserver struct{}

func (nopObserver) Delivery(string, time.Duration) {}
func (nopObserver) Ack(string)                     {}
func (nopObserver) Lease(string)                   {}

// Subscription statuses.
const (
	StatusActive = "active"
	StatusPaused = "paused"
	// StatusGone: Zapier no longer has the inbox; PUT it again to recreate.
	StatusGone = "gone"
)

// Errors of the subscription calls.
var (
	ErrInvalidName          = errors.New("triggers: a subscription name is 1-64 of A-Z a-z 0-9 . _ -")
	ErrSubscriptionConflict = errors.New("triggers: the subscription exists with another configuration")
	ErrNotFound             = errors.New("triggers: no such subscription")
	ErrSubscriptionLimit    = errors.New("triggers: the user has as many subscriptions as allowed")
)

var validName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// Spec is what a subscription asks for.
type Spec struct {
	App          string          // Zapier's app key, e.g. SlackCLIAPI
	Trigger      string          // the trigger's action key
	Inputs       json.RawMessage // trigger inputs (an object)
	ConnectionID string          // the user's connection; "" for triggers without one
}

// Counts are one subscription's delivery counts on this gateway since it
// started.
type Counts struct {
	Delivered      int64      `json:"delivered"`
	FailedAttempts int64      `json:"failed_attempts"`
	DeadLettered   int64      `json:"dead_lettered"`
	LastDelivery   *time.Time `json:"last_delivery,omitempty"`
	LastError      string     `json:"last_error,omitempty"`
}

// View is a subscription with its counts.
type View struct {
	Record
	Counts Counts `json:"counts"`
}

type subState struct {
	rec     Record
	running bool
	again   bool
	probe   bool // lease one message at a time until a delivery succeeds
	backoff time.Duration
	counts  Counts
}

// Manager keeps the subscriptions and delivers their messages.
type Manager struct {
	cfg Config
	ns  *gateway.Namespace

	// writeMu orders writes and deletes of subscription records, so a
	// drain updating a status never brings back a record Delete removed.
	writeMu    sync.Mutex
	mu         sync.Mutex
	subs       map[string]*subState // by storage key
	byInbox    map[string]string    // inbox id → storage key
	ctx        context.Context      // set by Start
	stopped    bool
	lastReload time.Time
	// reloadMu makes reloads single-flight: a caller that waited for
	// another's reload does not start one of its own (reloadIfStale).
	reloadMu sync.Mutex
	sem      chan struct{}
	watchers map[string]*watcher // by storage key, when cfg.Stream
	wg       sync.WaitGroup
	cancel   context.CancelFunc
}

// NewManager checks cfg and fills in defaults.
func NewManager(cfg Config) (*Manager, error) {
	if cfg.API == nil || cfg.Sender == nil || cfg.Storage == nil || cfg.Names == nil {
		return nil, errors.New("triggers: API, Sender, Storage and Names are required")
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.LeaseLimit, DefaultLeaseLimit)
	cfg.LeaseLimit = min(cfg.LeaseLimit, 100)
	def(&cfg.Attempts, DefaultAttempts)
	def(&cfg.MaxLeases, DefaultMaxLeases)
	def(&cfg.MaxConcurrent, DefaultMaxConcurrent)
	def(&cfg.MaxSubscriptionsPerUser, DefaultMaxSubscriptionsPerUser)
	defD(&cfg.RetryBase, DefaultRetryBase)
	defD(&cfg.RetryMax, DefaultRetryMax)
	defD(&cfg.BackoffMax, DefaultBackoffMax)
	defD(&cfg.DrainInterval, DefaultDrainInterval)
	defD(&cfg.LockWait, DefaultLockWait)
	defD(&cfg.LockTTL, DefaultLockTTL)
	defD(&cfg.StreamIdle, 60*time.Second)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.IdentityHash == nil {
		cfg.IdentityHash = func(Identity) string { return "" }
	}
	return &Manager{cfg: cfg, ns: gateway.NewNamespace(cfg.Names), subs: map[string]*subState{}, byInbox: map[string]string{}, watchers: map[string]*watcher{},
		sem: make(chan struct{}, cfg.MaxConcurrent)}, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Start loads the subscriptions and starts the safety drain; background
// work ends with ctx or Stop.
func (m *Manager) Start(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	m.mu.Lock()
	m.ctx, m.cancel = ctx, cancel
	m.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(m.cfg.DrainInterval)
		defer t.Stop()
		for {
			m.reload(ctx)
			// Dead letters of older versions are sealed on the way.
			if _, err := m.listDead(ctx); err != nil && ctx.Err() == nil {
				m.cfg.Logger.Info("reading trigger dead letters", zap.Error(err))
			}
			m.WakeAll()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// Stop ends the background work and waits for it.
func (m *Manager) Stop() {
	m.mu.Lock()
	m.stopped = true
	cancel := m.cancel
	m.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	m.wg.Wait()
}

// reload re-reads every subscription from storage, so subscriptions made
// by other gateways sharing it are drained here too; records of older
// versions are migrated on the way (atrest.go).
func (m *Manager) reload(ctx context.Context) {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	m.reloadLocked(ctx)
}

// reloadIfStale reloads unless a reload started less than a second ago;
// concurrent callers share one reload.
func (m *Manager) reloadIfStale(ctx context.Context) {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	m.mu.Lock()
	stale := m.cfg.Now().Sub(m.lastReload) > time.Second
	m.mu.Unlock()
	if stale {
		m.reloadLocked(ctx)
	}
}

func (m *Manager) reloadLocked(ctx context.Context) {
	m.mu.Lock()
	m.lastReload = m.cfg.Now() // also when it fails: no retry storm
	m.mu.Unlock()
	recs, bad, err := m.listSubs(ctx, subsPrefix)
	if err != nil {
		m.cfg.Logger.Warn("loading trigger subscriptions", zap.Error(err))
		return
	}
	if bad > 0 {
		m.cfg.Logger.Warn("trigger subscription records that do not open (another names key?) were skipped", zap.Int("records", bad))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := map[string]bool{}
	for key, rec := range recs {
		seen[key] = true
		m.indexLocked(key, rec)
	}
	for key, st := range m.subs {
		if !seen[key] {
			delete(m.byInbox, st.rec.InboxID)
			delete(m.subs, key)
			m.unwatchLocked(key)
		}
	}
}

func (m *Manager) indexLocked(key string, rec Record) *subState {
	st := m.subs[key]
	if st == nil {
		st = &subState{}
		m.subs[key] = st
	}
	if st.rec.InboxID != "" && st.rec.InboxID != rec.InboxID {
		delete(m.byInbox, st.rec.InboxID)
	}
	st.rec = rec
	m.byInbox[rec.InboxID] = key
	m.watchLocked(key, rec)
	return st
}

// watcher is one subscription's events-stream goroutine.
type watcher struct {
	inboxID string
	cancel  context.CancelFunc
}

// watchLocked starts watching the subscription's events stream, once per
// inbox, when streams are on and the manager runs.
func (m *Manager) watchLocked(key string, rec Record) {
	if !m.cfg.Stream || m.ctx == nil || m.stopped || rec.Status == StatusGone {
		return
	}
	if w := m.watchers[key]; w != nil {
		if w.inboxID == rec.InboxID {
			return
		}
		w.cancel() // the inbox was recreated
	}
	ctx, cancel := context.WithCancel(m.ctx)
	w := &watcher{inboxID: rec.InboxID, cancel: cancel}
	m.watchers[key] = w
	m.wg.Add(1)
	go m.runWatch(ctx, key, rec, w)
}

func (m *Manager) unwatchLocked(key string) {
	if w := m.watchers[key]; w != nil {
		w.cancel()
		delete(m.watchers, key)
	}
}

var streamBackoff = []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second}

func (m *Manager) runWatch(ctx context.Context, key string, rec Record, w *watcher) {
	defer m.wg.Done()
	defer func() {
		m.mu.Lock()
		if m.watchers[key] == w {
			delete(m.watchers, key)
		}
		m.mu.Unlock()
		w.cancel()
	}()
	fails := 0
	for ctx.Err() == nil {
		m.wake(key) // drain on every (re)connect: the stream has no replay
		start := m.cfg.Now()
		err := m.cfg.API.Events(ctx, rec.Identity(), rec.InboxID, m.cfg.StreamIdle, func(data []byte) {
			var f struct {
				InboxID string `json:"inbox_id"`
			}
			if json.Unmarshal(data, &f) == nil && strings.EqualFold(f.InboxID, rec.InboxID) {
				m.wake(key)
			}
		})
		if ctx.Err() != nil {
			return
		}
		if zapierapi.IsPermanent(err) {
			m.cfg.Logger.Info("the inbox events stream was refused; notifications and the safety drain remain",
				zap.String("subscription", rec.Name), zap.Error(err))
			return
		}
		if m.cfg.Now().Sub(start) >= 5*time.Second {
			fails = 0
		}
		pause := streamBackoff[min(fails, len(streamBackoff)-1)]
		fails++
		if sleep(ctx, pause) != nil {
			return
		}
	}
}

// WakeAll schedules a drain of every subscription.
func (m *Manager) WakeAll() {
	m.mu.Lock()
	keys := make([]string, 0, len(m.subs))
	for k := range m.subs {
		keys = append(keys, k)
	}
	m.mu.Unlock()
	for _, k := range keys {
		m.wake(k)
	}
}

// Notify is Zapier's availability notification for an inbox (§3.8), an
// untrusted hint: an unknown inbox is ignored (false), a known one drained.
// With a NotifyKey, a token that cannot be valid is refused before any
// lookup, and only a token the gateway minted (its MAC checks without a
// lookup) may reload the subscriptions to find an inbox made by another
// gateway since the last reload; reloads are single-flight and at most one
// a second, so no flood of notifications turns into storage reads.
func (m *Manager) Notify(ctx context.Context, inboxID, token string) bool {
	if inboxID == "" || len(inboxID) > 128 {
		return false
	}
	minted := true
	if m.cfg.NotifyKey != nil {
		switch m.NotifyTokenForm(token) {
		case TokenMalformed:
			return false
		case TokenLegacy:
			minted = false // an inbox of an older version: already loaded at start
		}
	}
	m.mu.Lock()
	key, ok := m.byInbox[inboxID]
	m.mu.Unlock()
	if !ok && minted {
		m.reloadIfStale(ctx) // made by another gateway since the last reload?
		m.mu.Lock()
		key, ok = m.byInbox[inboxID]
		m.mu.Unlock()
	}
	if ok && m.cfg.NotifyKey != nil {
		m.mu.Lock()
		inboxKey := m.subs[key].rec.InboxKey
		m.mu.Unlock()
		want := m.NotifyToken(inboxKey)
		if !minted {
			want = m.legacyNotifyToken(inboxKey)
		}
		ok = hmac.Equal([]byte(token), []byte(want))
	}
	if ok {
		m.wake(key)
	}
	return ok
}

// Notification token forms.
const (
	// TokenMalformed cannot be one the gateway registered.
	TokenMalformed = iota
	// TokenMinted is one the gateway minted (its MAC checks).
	TokenMinted
	// TokenLegacy has the form of an older version's token (32 hex
	// digits), checked only against inboxes already loaded.
	TokenLegacy
)

// NotifyTokenForm tells, without any lookup, whether an inbox_token can be
// valid: 64 lower-case hex digits, the inbox's tag and a MAC of it under
// the notify key; or an older version's 32 hex digits.
func (m *Manager) NotifyTokenForm(token string) int {
	if !isLowerHex(token) {
		return TokenMalformed
	}
	switch len(token) {
	case 32:
		return TokenLegacy
	case 64:
		if hmac.Equal([]byte(token[32:]), []byte(m.tokenMAC(token[:32]))) {
			return TokenMinted
		}
	}
	return TokenMalformed
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return s != ""
}

// NotifyToken is the inbox's token in its notification URL: a tag of the
// inbox key and a MAC of the tag, so a forged token is refused unseen.
func (m *Manager) NotifyToken(inboxKey string) string {
	h := hmac.New(sha256.New, m.cfg.NotifyKey)
	h.Write([]byte("inbox\x00" + inboxKey))
	tag := hex.EncodeToString(h.Sum(nil)[:16])
	return tag + m.tokenMAC(tag)
}

func (m *Manager) tokenMAC(tag string) string {
	h := hmac.New(sha256.New, m.cfg.NotifyKey)
	h.Write([]byte("token\x00" + tag))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// legacyNotifyToken is an older version's token, registered on inboxes
// made before self-checking tokens.
func (m *Manager) legacyNotifyToken(inboxKey string) string {
	h := hmac.New(sha256.New, m.cfg.NotifyKey)
	h.Write([]byte(inboxKey))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// notificationURL is the URL registered on the inbox with inboxKey.
func (m *Manager) notificationURL(inboxKey string) string {
	if m.cfg.NotificationURL == "" || m.cfg.NotifyKey == nil {
		return m.cfg.NotificationURL
	}
	u, err := url.Parse(m.cfg.NotificationURL)
	if err != nil {
		return m.cfg.NotificationURL
	}
	q := u.Query()
	q.Set("inbox_token", m.NotifyToken(inboxKey))
	u.RawQuery = q.Encode()
	return u.String()
}

// wake drains a subscription in the background, at most once at a time;
// a wake during a drain makes it drain again.
func (m *Manager) wake(key string) {
	m.mu.Lock()
	st := m.subs[key]
	if st == nil || m.ctx == nil || m.stopped {
		m.mu.Unlock()
		return
	}
	if st.running {
		st.again = true
		m.mu.Unlock()
		return
	}
	st.running, st.again = true, false
	ctx, rec := m.ctx, st.rec
	m.wg.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.wg.Done()
		select {
		case m.sem <- struct{}{}:
		case <-ctx.Done():
			m.mu.Lock()
			st.running = false
			m.mu.Unlock()
			return
		}
		defer func() { <-m.sem }()
		for {
			if err := m.drain(ctx, key); err != nil && ctx.Err() == nil {
				m.cfg.Logger.Info("draining a trigger inbox", zap.String("identity", m.cfg.IdentityHash(rec.Identity())),
					zap.String("subscription", rec.Name), zap.Error(err))
			}
			m.mu.Lock()
			if !st.again || ctx.Err() != nil {
				st.running = false
				m.mu.Unlock()
				return
			}
			st.again = false
			m.mu.Unlock()
		}
	}()
}

// Drain delivers what the subscription's inbox holds now, synchronously.
func (m *Manager) Drain(ctx context.Context, id Identity, name string) error {
	key, err := m.subKey(ctx, id, name)
	if err != nil {
		return err
	}
	m.mu.Lock()
	_, ok := m.subs[key]
	m.mu.Unlock()
	if !ok {
		key, rec, err := m.load(ctx, id, name)
		if err != nil {
			return err
		}
		m.mu.Lock()
		m.indexLocked(key, *rec)
		m.mu.Unlock()
		return m.drain(ctx, key)
	}
	return m.drain(ctx, key)
}

func (m *Manager) leaseSeconds(limit int) int {
	timeout := m.cfg.Sender.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	per := time.Duration(m.cfg.Attempts)*timeout + time.Duration(m.cfg.Attempts-1)*m.cfg.RetryMax
	total := time.Duration(limit)*per + 30*time.Second
	return int(min(max(total, 30*time.Second), time.Hour) / time.Second)
}

func (m *Manager) drain(ctx context.Context, key string) error {
	parent := ctx
	ctx, unlock := m.lockDrain(ctx, key)
	if ctx == nil {
		return nil // another gateway (or drain) holds it and delivers
	}
	defer unlock()

	for ctx.Err() == nil {
		m.mu.Lock()
		st := m.subs[key]
		if st == nil {
			m.mu.Unlock()
			return nil // deleted
		}
		rec, limit := st.rec, m.cfg.LeaseLimit
		if st.probe {
			limit = 1
		}
		m.mu.Unlock()
		id := rec.Identity()

		lease, err := m.cfg.API.Lease(ctx, id, rec.InboxID, m.leaseSeconds(limit), limit)
		switch {
		case errors.Is(err, ErrPausedDrained):
			m.cfg.Observer.Lease("paused")
			reason := "unknown"
			if ib, gerr := m.cfg.API.Get(ctx, id, rec.InboxID); gerr == nil && ib.PausedReason != nil {
				reason = *ib.PausedReason
			}
			m.paused(ctx, key, reason)
			return nil
		case IsNotFound(err):
			// Deleted at Zapier (or with the user's connection): shown in
			// GET; a PUT with the same configuration makes a new inbox.
			m.cfg.Observer.Lease("gone")
			if rec.Status != StatusGone {
				_, _ = m.setStatus(ctx, key, StatusGone, "", "")
			}
			return nil
		case err != nil:
			m.cfg.Observer.Lease("failed")
			return err
		}
		if lease.InboxAttributes.Status == "paused" {
			m.paused(ctx, key, lease.InboxAttributes.Reason())
		} else if lease.InboxAttributes.Status == "active" && rec.Status == "paused" && rec.PausedBy == "zapier" {
			m.setStatus(ctx, key, "active", "", "")
		}
		if len(lease.Results) == 0 || lease.LeaseID == nil {
			m.cfg.Observer.Lease("empty")
			return nil
		}
		m.cfg.Observer.Lease("messages")
		if !m.deliverLease(ctx, key, rec, *lease.LeaseID, lease.Results) {
			return nil
		}
	}
	return parent.Err() // not when the drain lock was lost: that was logged
}

// triggerEvent is the body POSTed to the partner for one message.
type triggerEvent struct {
	Type              string          `json:"type"`
	Subscription      string          `json:"subscription"`
	Tenant            string          `json:"tenant"`
	User              string          `json:"user"`
	App               string          `json:"app"`
	Trigger           string          `json:"trigger"`
	MessageID         string          `json:"message_id"`
	CreatedAt         string          `json:"created_at,omitempty"`
	Payload           json.RawMessage `json:"payload"`
	PossibleDuplicate bool            `json:"possible_duplicate"`
	ErrorMessage      *string         `json:"error_message,omitempty"`
}

func eventBody(rec Record, msg Message) []byte {
	payload := msg.Payload
	if len(bytes.TrimSpace(payload)) == 0 {
		payload = json.RawMessage("null")
	}
	b, _ := json.Marshal(triggerEvent{
		Type: "trigger.event", Subscription: rec.Name, Tenant: rec.Tenant, User: rec.User, App: rec.App,
		Trigger: rec.Trigger, MessageID: msg.ID, CreatedAt: msg.CreatedAt, Payload: payload,
		// Leased before: a gateway may have delivered it and died before the ack.
		PossibleDuplicate: msg.Attributes.PossibleDuplicate || msg.Attributes.LeaseCount > 1,
		ErrorMessage:      msg.Attributes.ErrorMessage,
	})
	return b
}

// deliverLease delivers a lease's messages in order; it reports false when
// it stopped early (the rest released, the subscription backing off).
func (m *Manager) deliverLease(ctx context.Context, key string, rec Record, leaseID string, msgs []Message) bool {
	id := rec.Identity()
	for i, msg := range msgs {
		body := eventBody(rec, msg)
		attempts, err := m.deliver(ctx, key, msg.ID, body)
		if err == nil {
			m.ack(ctx, id, rec.InboxID, leaseID, msg.ID)
			if o, ok := m.cfg.Observer.(DeliveryObserver); ok {
				o.Delivered(id)
			}
			m.update(key, func(st *subState) {
				now := m.cfg.Now().UTC()
				st.counts.Delivered++
				st.counts.LastDelivery = &now
				st.probe, st.backoff = false, 0
			})
			continue
		}
		if ctx.Err() != nil {
			m.release(context.WithoutCancel(ctx), id, rec.InboxID, leaseID, msgs[i:])
			return false
		}
		if msg.Attributes.LeaseCount >= m.cfg.MaxLeases {
			m.deadLetter(ctx, key, rec, leaseID, msg, body, attempts, err)
			continue
		}
		m.release(ctx, id, rec.InboxID, leaseID, msgs[i:])
		var wait time.Duration
		m.update(key, func(st *subState) {
			st.probe = true
			st.backoff = min(max(2*st.backoff, m.cfg.RetryBase), m.cfg.BackoffMax)
			wait = st.backoff
		})
		m.cfg.Logger.Info("the partner refused a trigger event; released for a later attempt",
			zap.String("identity", m.cfg.IdentityHash(id)), zap.String("subscription", rec.Name),
			zap.String("message_id", msg.ID), zap.Duration("retry_in", wait), zap.Error(err))
		time.AfterFunc(wait, func() { m.wake(key) })
		return false
	}
	return true
}

// deliver POSTs one message up to Attempts times with backoff.
func (m *Manager) deliver(ctx context.Context, key, msgID string, body []byte) (int, error) {
	var err error
	for a := 1; a <= m.cfg.Attempts; a++ {
		start := m.cfg.Now()
		err = m.cfg.Sender.Send(ctx, msgID, body)
		took := m.cfg.Now().Sub(start)
		if err == nil {
			m.cfg.Observer.Delivery("delivered", took)
			return a, nil
		}
		m.cfg.Observer.Delivery("failed", took)
		m.update(key, func(st *subState) {
			st.counts.FailedAttempts++
			st.counts.LastError = err.Error()
		})
		if a == m.cfg.Attempts || ctx.Err() != nil {
			return a, err
		}
		pause := min(m.cfg.RetryBase<<(a-1), m.cfg.RetryMax)
		if serr := m.cfg.Sleep(ctx, pause); serr != nil {
			return a, err
		}
	}
	return m.cfg.Attempts, err
}

func (m *Manager) ack(ctx context.Context, id Identity, inboxID, leaseID, msgID string) {
	err := m.cfg.API.Ack(ctx, id, inboxID, leaseID, msgID)
	switch {
	case err == nil:
		m.cfg.Observer.Ack("acked")
	case IsLeaseExpired(err):
		// Delivered, but Zapier will lease it again: the partner gets it a
		// second time, with the same webhook-id to de-duplicate on.
		m.cfg.Observer.Ack("lease_expired")
	default:
		m.cfg.Observer.Ack("failed")
		m.cfg.Logger.Warn("acknowledging a delivered trigger event", zap.String("message_id", msgID), zap.Error(err))
	}
}

func (m *Manager) release(ctx context.Context, id Identity, inboxID, leaseID string, msgs []Message) {
	ids := make([]string, len(msgs))
	for i, msg := range msgs {
		ids[i] = msg.ID
	}
	if err := m.cfg.API.Release(ctx, id, inboxID, leaseID, ids...); err != nil && !IsLeaseExpired(err) {
		m.cfg.Logger.Info("releasing trigger events (they return when the lease ends)", zap.Error(err))
		return
	}
	m.cfg.Observer.Ack("released")
}

func (m *Manager) deadLetter(ctx context.Context, key string, rec Record, leaseID string, msg Message, body []byte, attempts int, cause error) {
	dl := DeadLetter{ID: msg.ID, Tenant: rec.Tenant, User: rec.User, Subscription: rec.Name, Body: body,
		Attempts: attempts * msg.Attributes.LeaseCount, LastError: cause.Error(), Created: m.cfg.Now().UTC()}
	if err := m.putDead(ctx, dl); err != nil {
		// Not recorded: leave the message at Zapier rather than lose it.
		m.cfg.Logger.Error("recording a dead letter; the message stays leased at Zapier", zap.String("message_id", msg.ID), zap.Error(err))
		return
	}
	m.ack(ctx, rec.Identity(), rec.InboxID, leaseID, msg.ID)
	m.cfg.Observer.Delivery("dead_lettered", 0)
	m.update(key, func(st *subState) { st.counts.DeadLettered++ })
	m.cfg.Logger.Warn("a trigger event went to the dead letters", zap.String("identity", m.cfg.IdentityHash(rec.Identity())),
		zap.String("subscription", rec.Name), zap.String("message_id", msg.ID), zap.Error(cause))
}

func (m *Manager) update(key string, f func(st *subState)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if st := m.subs[key]; st != nil {
		f(st)
	}
}

// paused records that Zapier paused the inbox and tells the partner once
// (trigger.paused), unless the pause was the user's own through the gateway.
func (m *Manager) paused(ctx context.Context, key, reason string) {
	m.mu.Lock()
	st := m.subs[key]
	if st == nil || st.rec.Status == "paused" && (st.rec.PausedReason == reason || st.rec.PausedBy == "user") {
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	rec, err := m.setStatus(ctx, key, "paused", reason, "zapier")
	if err != nil {
		return
	}
	body, _ := json.Marshal(map[string]any{
		"type": "trigger.paused", "subscription": rec.Name, "tenant": rec.Tenant, "user": rec.User,
		"app": rec.App, "trigger": rec.Trigger, "reason": reason,
		"reconnect": reason == "authentication" || reason == "authentication_access_revoked",
	})
	evID := "paused_" + rec.InboxID + "_" + strconv.FormatInt(rec.Updated.Unix(), 10)
	if _, err := m.deliver(ctx, key, evID, body); err != nil {
		m.cfg.Logger.Warn("telling the partner a trigger inbox was paused", zap.String("subscription", rec.Name), zap.Error(err))
	}
}

func (m *Manager) setStatus(ctx context.Context, key, status, reason, by string) (Record, error) {
	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	m.mu.Lock()
	st := m.subs[key]
	if st == nil {
		m.mu.Unlock()
		return Record{}, ErrNotFound
	}
	st.rec.Status, st.rec.PausedReason, st.rec.PausedBy, st.rec.Updated = status, reason, by, m.cfg.Now().UTC()
	rec := st.rec
	m.mu.Unlock()
	if err := m.putSub(ctx, key, rec); err != nil {
		m.cfg.Logger.Error("storing a trigger subscription", zap.Error(err))
		return rec, err
	}
	return rec, nil
}

// Ensure makes sure the user has the subscription: the same name with the
// same configuration is a no-op (created false), with another one
// ErrSubscriptionConflict.
func (m *Manager) Ensure(ctx context.Context, id Identity, name string, spec Spec) (View, bool, error) {
	if !validName.MatchString(name) {
		return View{}, false, ErrInvalidName
	}
	inputs := spec.Inputs
	if len(bytes.TrimSpace(inputs)) == 0 || string(bytes.TrimSpace(inputs)) == "null" {
		inputs = json.RawMessage("{}")
	}
	key, old, err := m.load(ctx, id, name)
	if errors.Is(err, ErrNotFound) {
		key, err = m.subKey(ctx, id, name)
		if err == nil {
			err = m.checkLimit(ctx, id)
		}
	}
	if err != nil {
		return View{}, false, err
	}
	if old != nil && old.Status != StatusGone {
		if old.App != spec.App || old.Trigger != spec.Trigger || old.ConnectionID != spec.ConnectionID || !jsonEqual(old.Inputs, inputs) {
			return View{}, false, ErrSubscriptionConflict
		}
		return m.view(key, *old), false, nil
	}
	sub := Subscription{AppKey: spec.App, ActionKey: spec.Trigger, Inputs: inputs}
	if spec.ConnectionID != "" {
		c := spec.ConnectionID
		sub.ConnectionID = &c
	}
	inboxKey, err := m.inboxKey(ctx, id, name)
	if err != nil {
		return View{}, false, err
	}
	ib, err := m.cfg.API.Ensure(ctx, id, inboxKey, sub, m.notificationURL(inboxKey))
	if err != nil {
		return View{}, false, err
	}
	now := m.cfg.Now().UTC()
	rec := Record{Tenant: id.Tenant, User: id.User, Name: name, App: spec.App, Trigger: spec.Trigger, Inputs: inputs,
		ConnectionID: spec.ConnectionID, InboxID: ib.ID, InboxKey: inboxKey, Status: "active", Created: now, Updated: now}
	if ib.Status == "paused" {
		rec.Status, rec.PausedBy = "paused", "zapier"
		if ib.PausedReason != nil {
			rec.PausedReason = *ib.PausedReason
		}
	}
	if err := m.putSub(ctx, key, rec); err != nil {
		return View{}, false, fmt.Errorf("storing the subscription: %w", err)
	}
	m.mu.Lock()
	m.indexLocked(key, rec)
	m.mu.Unlock()
	m.wake(key)
	return m.view(key, rec), true, nil
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

func (m *Manager) view(key string, rec Record) View {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := View{Record: rec}
	if st := m.subs[key]; st != nil {
		v.Counts = st.counts
	}
	return v
}

func (m *Manager) load(ctx context.Context, id Identity, name string) (string, *Record, error) {
	if !validName.MatchString(name) {
		return "", nil, ErrNotFound
	}
	key, err := m.subKey(ctx, id, name)
	if err != nil {
		return "", nil, err
	}
	key, rec, err := m.readSub(ctx, key)
	if err == nil && rec == nil {
		// Stored by an older version? Migrated when found.
		key, rec, err = m.readSub(ctx, legacySubKey(id, name))
	}
	if err != nil {
		return "", nil, err
	}
	if rec == nil || rec.Identity() != id || rec.Name != name {
		return "", nil, ErrNotFound
	}
	return key, rec, nil
}

// checkLimit refuses a new subscription past MaxSubscriptionsPerUser.
func (m *Manager) checkLimit(ctx context.Context, id Identity) error {
	prefix, err := m.userSubsPrefix(ctx, id)
	if err != nil {
		return err
	}
	keys, err := m.cfg.Storage.List(ctx, prefix, false)
	if err != nil && !isNotExist(err) {
		return err
	}
	if len(keys) >= m.cfg.MaxSubscriptionsPerUser {
		return ErrSubscriptionLimit
	}
	return nil
}

// Get returns one of the user's subscriptions.
func (m *Manager) Get(ctx context.Context, id Identity, name string) (View, error) {
	key, rec, err := m.load(ctx, id, name)
	if err != nil {
		return View{}, err
	}
	return m.view(key, *rec), nil
}

// List returns the user's subscriptions.
func (m *Manager) List(ctx context.Context, id Identity) ([]View, error) {
	recs, err := m.userSubs(ctx, id)
	if err != nil {
		return nil, err
	}
	out := make([]View, 0, len(recs))
	for key, rec := range recs {
		out = append(out, m.view(key, rec))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Pause pauses the inbox at Zapier (new events are dropped meanwhile, §3.7).
func (m *Manager) Pause(ctx context.Context, id Identity, name string) (View, error) {
	key, rec, err := m.load(ctx, id, name)
	if err != nil {
		return View{}, err
	}
	if _, err := m.cfg.API.Pause(ctx, id, rec.InboxID); err != nil {
		return View{}, err
	}
	m.mu.Lock()
	m.indexLocked(key, *rec)
	m.mu.Unlock()
	r, err := m.setStatus(ctx, key, "paused", "user", "user")
	if err != nil {
		return View{}, err
	}
	return m.view(key, r), nil
}

// Resume resumes the inbox at Zapier and drains it.
func (m *Manager) Resume(ctx context.Context, id Identity, name string) (View, error) {
	key, rec, err := m.load(ctx, id, name)
	if err != nil {
		return View{}, err
	}
	if _, err := m.cfg.API.Resume(ctx, id, rec.InboxID); err != nil {
		return View{}, err
	}
	m.mu.Lock()
	m.indexLocked(key, *rec)
	m.mu.Unlock()
	r, err := m.setStatus(ctx, key, "active", "", "")
	if err != nil {
		return View{}, err
	}
	m.wake(key)
	return m.view(key, r), nil
}

// Delete deletes the inbox at Zapier and forgets the subscription.
func (m *Manager) Delete(ctx context.Context, id Identity, name string) error {
	key, rec, err := m.load(ctx, id, name)
	if err != nil {
		return err
	}
	if err := m.cfg.API.Delete(ctx, id, rec.InboxID); err != nil {
		return err
	}
	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	m.mu.Lock()
	delete(m.byInbox, rec.InboxID)
	delete(m.subs, key)
	m.unwatchLocked(key)
	m.mu.Unlock()
	return m.cfg.Storage.Delete(ctx, key)
}

// Publish delivers an event of the gateway's own (not an inbox message)
// in the background: Attempts POSTs with backoff, then a dead letter,
// replayable like the others. It does nothing once the manager stopped.
func (m *Manager) Publish(id string, who Identity, body []byte) {
	m.mu.Lock()
	ctx := m.ctx
	if ctx == nil || m.stopped {
		m.mu.Unlock()
		return
	}
	m.wg.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.wg.Done()
		attempts, err := m.deliver(ctx, "", id, body)
		if err == nil {
			return
		}
		// Also when shutting down: recorded, it can be replayed.
		dl := DeadLetter{ID: id, Tenant: who.Tenant, User: who.User, Body: body, Attempts: attempts,
			LastError: err.Error(), Created: m.cfg.Now().UTC()}
		if serr := m.putDead(context.WithoutCancel(ctx), dl); serr != nil {
			m.cfg.Logger.Error("recording a dead letter; the event is lost", zap.String("webhook_id", id), zap.Error(serr))
			return
		}
		m.cfg.Observer.Delivery("dead_lettered", 0)
		m.cfg.Logger.Warn("a gateway event went to the dead letters", zap.String("identity", m.cfg.IdentityHash(who)),
			zap.String("webhook_id", id), zap.Error(err))
	}()
}

// DeadLetters lists the dead letters.
func (m *Manager) DeadLetters(ctx context.Context) ([]DeadLetter, error) {
	dls, err := m.listDead(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]DeadLetter, 0, len(dls))
	for _, dl := range dls {
		out = append(out, dl)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// Replay delivers a dead letter again, with its original webhook-id and
// body; on a 2xx it is deleted.
func (m *Manager) Replay(ctx context.Context, msgID string) error {
	dl, err := m.readDead(ctx, deadKey(msgID))
	if err != nil {
		return err
	}
	if dl == nil {
		return ErrNotFound
	}
	if err := m.cfg.Sender.Send(ctx, dl.ID, dl.Body); err != nil {
		m.cfg.Observer.Delivery("failed", 0)
		return err
	}
	m.cfg.Observer.Delivery("delivered", 0)
	return m.cfg.Storage.Delete(ctx, deadKey(msgID))
}
