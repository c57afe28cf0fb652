package triggers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/webhooksig"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// Options are zapier_triggers' own settings, resolved (no placeholders).
// Check validates them and derives the signer, the verifier and the notify
// key; a delivery loop (NewDeliveryLoop) and a Handler are built from the
// checked Options.
type Options struct {
	DeliverTo, SigningSecret, NotificationURL, ConnectionWebhookSecret string
	// InboxPrefix is the Trigger Inbox path on APIURL; "" is DefaultPrefix.
	InboxPrefix string
	APIURL      string
	// EventsStream: nil is on when NotificationURL is not set.
	EventsStream                                             *bool
	DeliveryTimeout, DrainInterval, RetryBase, RetryMax      time.Duration
	MaxSubscriptionsPerUser, Attempts, MaxLeases, LeaseLimit int
	MaxConcurrent                                            int

	signer    *webhooksig.Signer
	verifier  *webhooksig.Verifier
	notifyKey []byte
}

// Check sets the defaults and checks the values; its errors name the
// option and never quote a secret.
func (o *Options) Check() error {
	if err := zapierapi.CheckURL(o.DeliverTo); err != nil {
		return fmt.Errorf("deliver_to: %w", err)
	}
	if o.NotificationURL != "" {
		if err := zapierapi.CheckURL(o.NotificationURL); err != nil {
			return fmt.Errorf("notification_url: %w", err)
		}
	}
	signer, err := webhooksig.NewSigner(o.SigningSecret)
	if err != nil {
		return fmt.Errorf("signing_secret: %w", err)
	}
	o.signer, o.verifier = signer, nil
	if o.ConnectionWebhookSecret != "" {
		if o.verifier, err = webhooksig.NewVerifier(o.ConnectionWebhookSecret, 0, nil); err != nil {
			return fmt.Errorf("connection_webhook_secret: %w", err)
		}
	}
	if o.InboxPrefix == "" {
		o.InboxPrefix = DefaultPrefix
	}
	if !strings.HasPrefix(o.InboxPrefix, "/") {
		return errors.New("inbox_prefix must start with /")
	}
	for name, v := range map[string]int{"max_subscriptions_per_user": o.MaxSubscriptionsPerUser, "attempts": o.Attempts, "max_leases": o.MaxLeases, "lease_limit": o.LeaseLimit, "max_concurrent": o.MaxConcurrent} {
		if v < 0 || name == "lease_limit" && v > 100 {
			return fmt.Errorf("%s out of range", name)
		}
	}
	// The per-inbox token in notification URLs is keyed by the signing
	// secret (hashed apart from it), so it is stable across restarts and
	// the same on every sidecar.
	nk := sha256.Sum256([]byte("caddy-zapier inbox notifications\x00" + o.SigningSecret))
	o.notifyKey = nk[:]
	return nil
}

// Stream reports whether to watch events streams: as configured, else
// when Zapier has no notification URL to push to.
func (o *Options) Stream() bool {
	if o.EventsStream != nil {
		return *o.EventsStream
	}
	return o.NotificationURL == ""
}

// LoopKey names the delivery loop these options run: configs with the
// same key share one loop (across reloads).
func (o *Options) LoopKey() string {
	sum := sha256.New()
	for _, part := range []string{o.DeliverTo, o.SigningSecret, o.NotificationURL, o.APIURL, o.InboxPrefix,
		fmt.Sprint(o.DeliveryTimeout, o.MaxSubscriptionsPerUser, o.Attempts, o.MaxLeases, o.LeaseLimit, o.MaxConcurrent, o.DrainInterval, o.RetryBase, o.RetryMax, o.Stream())} {
		sum.Write([]byte(part))
		sum.Write([]byte{0})
	}
	return hex.EncodeToString(sum.Sum(nil))
}

// sender posts to deliver_to, signed with signing_secret.
func (o *Options) sender() *Sender {
	return &Sender{URL: o.DeliverTo, Signer: o.signer, Timeout: o.DeliveryTimeout}
}

// LoopConfig is what a delivery loop needs besides the Options.
type LoopConfig struct {
	// Caller gives the Zapier caller of the newest config at each call
	// (the app's token cache, breaker and budget change with reloads).
	Caller func() *gateway.Caller
	// Storage holds subscriptions, leases and dead letters.
	Storage Storage
	// Names is the key users are named with at rest.
	Names    gateway.NamesKeySource
	Observer Observer
	Logger   *zap.Logger
}

// NewDeliveryLoop builds the delivery loop of checked options; the
// caller starts it (Manager.Start) and stops it.
func (o *Options) NewDeliveryLoop(lc LoopConfig) (*Manager, error) {
	if o.signer == nil {
		return nil, errors.New("triggers: options not checked")
	}
	api := &InboxAPI{
		BaseURL:    strings.TrimRight(o.APIURL, "/") + o.InboxPrefix,
		ClientFunc: func() *zapierapi.Client { return lc.Caller().Client },
		Call: func(ctx context.Context, id Identity, call func(context.Context, string) error) error {
			return lc.Caller().Call(ctx, gwID(id), call)
		},
	}
	return NewManager(Config{
		API: api, Sender: o.sender(), Storage: lc.Storage, Names: lc.Names, MaxSubscriptionsPerUser: o.MaxSubscriptionsPerUser,
		NotificationURL: o.NotificationURL, NotifyKey: o.notifyKey, Stream: o.Stream(),
		LeaseLimit: o.LeaseLimit, Attempts: o.Attempts, MaxLeases: o.MaxLeases, MaxConcurrent: o.MaxConcurrent,
		DrainInterval: o.DrainInterval, RetryBase: o.RetryBase, RetryMax: o.RetryMax,
		Observer: lc.Observer, Logger: lc.Logger,
		IdentityHash: func(id Identity) string { return gateway.LogHash(id.Tenant, id.User) },
	})
}
