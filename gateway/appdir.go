package gateway

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/zapgate/caddy-zapier/zapierapi"
)

// Zapier names an app two ways (zapier-api-2026.md §5.2): Connect URLs use
// its versionless key (SlackCLIAPI), the API its UUID. GET /v2/apps gives
// both, so a request may name an app either way without configuration.

// ErrAppNotFound: Zapier's catalog has no app by that key.
var ErrAppNotFound = errors.New("no such app in Zapier's catalog")

// Catalog lists GET /v2/apps: every app, or with ids only those (by UUID).
type Catalog func(ctx context.Context, ids ...string) ([]zapierapi.App, error)

// Defaults of AppDirectory.
const (
	DefaultCatalogRefresh = 24 * time.Hour
	DefaultCatalogRetry   = 5 * time.Minute
)

// AppDirectory resolves app keys and UUIDs through Zapier's catalog and
// keeps what it learnt. A key it does not know loads the whole catalog (at
// most once per Retry, and again when older than Refresh); a UUID it does
// not know is looked up by itself (one request). Safe for concurrent use.
type AppDirectory struct {
	// Refresh is how old the loaded catalog may grow before a miss loads
	// it again; default DefaultCatalogRefresh.
	Refresh time.Duration
	// Retry is the least time between two catalog loads; default
	// DefaultCatalogRetry. It bounds what unknown names can cost.
	Retry time.Duration
	Now   func() time.Time

	mu        sync.Mutex
	byKey     map[string]string // key → UUID (lower case)
	byUUID    map[string]string // UUID → key ("" when the catalog gave none)
	missed    map[string]time.Time
	loaded    time.Time // last full load
	attempted time.Time // last full load attempt
	loading   chan struct{}
}

func (d *AppDirectory) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

// Resolve returns the key and UUID of the app name names (a key or a
// UUID). A UUID the catalog does not know is used as both, as Zapier's API
// will judge it; a key it does not know is ErrAppNotFound.
func (d *AppDirectory) Resolve(ctx context.Context, name string, catalog Catalog) (key, uuid string, err error) {
	if IsUUID(name) {
		return d.resolveUUID(ctx, strings.ToLower(name), catalog)
	}
	key, _, _ = strings.Cut(name, "@") // SlackCLIAPI@1.0.0 names SlackCLIAPI
	for attempt := 0; ; attempt++ {
		d.mu.Lock()
		uuid, ok := d.byKey[key]
		loading := d.loading
		stale := d.attempted.IsZero() || d.now().Sub(d.attempted) >= cmpOr(d.Retry, DefaultCatalogRetry)
		d.mu.Unlock()
		switch {
		case ok:
			return key, uuid, nil
		case loading != nil: // another request is loading the catalog
			select {
			case <-loading:
			case <-ctx.Done():
				return "", "", ctx.Err()
			}
		case attempt > 0 || !stale:
			return "", "", ErrAppNotFound
		default:
			if err := d.load(ctx, catalog); err != nil {
				return "", "", err
			}
		}
	}
}

func (d *AppDirectory) resolveUUID(ctx context.Context, uuid string, catalog Catalog) (string, string, error) {
	d.mu.Lock()
	key, ok := d.byUUID[uuid]
	missedAt, missed := d.missed[uuid]
	d.mu.Unlock()
	switch {
	case ok:
		return orUUID(key, uuid), uuid, nil
	case missed && d.now().Sub(missedAt) < cmpOr(d.Retry, DefaultCatalogRetry):
		return uuid, uuid, nil
	}
	apps, err := catalog(ctx, uuid)
	if err != nil {
		return "", "", err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range apps {
		if strings.EqualFold(a.ID, uuid) {
			d.learn(a)
			return orUUID(a.Key, uuid), uuid, nil
		}
	}
	if d.missed == nil {
		d.missed = map[string]time.Time{}
	}
	d.missed[uuid] = d.now()
	return uuid, uuid, nil
}

// load reads the whole catalog; concurrent callers wait for one load.
func (d *AppDirectory) load(ctx context.Context, catalog Catalog) error {
	d.mu.Lock()
	if ch := d.loading; ch != nil {
		d.mu.Unlock()
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	ch := make(chan struct{})
	d.loading = ch
	d.attempted = d.now()
	d.mu.Unlock()

	apps, err := catalog(ctx)

	d.mu.Lock()
	defer d.mu.Unlock()
	d.loading = nil
	close(ch)
	if err != nil {
		return err
	}
	if d.now().Sub(d.loaded) >= cmpOr(d.Refresh, DefaultCatalogRefresh) {
		d.byKey, d.byUUID = nil, nil // a full load replaces what was learnt
	}
	for _, a := range apps {
		d.learn(a)
	}
	d.loaded = d.now()
	return nil
}

// learn records one app; d.mu is held.
func (d *AppDirectory) learn(a zapierapi.App) {
	if d.byKey == nil {
		d.byKey, d.byUUID = map[string]string{}, map[string]string{}
	}
	uuid := strings.ToLower(a.ID)
	d.byUUID[uuid] = a.Key
	if a.Key != "" {
		d.byKey[a.Key] = uuid
	}
}

func orUUID(key, uuid string) string {
	if key == "" {
		return uuid
	}
	return key
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
