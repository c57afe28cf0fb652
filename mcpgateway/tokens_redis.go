package mcpgateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisInvalidations are Invalidations over a Redis pub/sub channel (the
// zapier app's cache.redis): a message is "<sender> <storage key>"; a
// storage key names the user only by a keyed hash.
type RedisInvalidations struct {
	client  *redis.Client
	channel string
	sender  string
	// PingEvery: a subscription that heard nothing for this long is
	// pinged, and counts as down when the ping fails (a Redis that stopped
	// answering does not close the connection). Default 15s.
	PingEvery time.Duration
}

// NewRedisInvalidations publishes and listens on channel.
func NewRedisInvalidations(client *redis.Client, channel string) *RedisInvalidations {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return &RedisInvalidations{client: client, channel: channel, sender: hex.EncodeToString(b)}
}

// Publish implements Invalidations.
func (r *RedisInvalidations) Publish(ctx context.Context, key string) error {
	return r.client.Publish(ctx, r.channel, r.sender+" "+key).Err()
}

// Listen implements Invalidations: it subscribes, and subscribes again
// (after a second) whenever the subscription breaks.
func (r *RedisInvalidations) Listen(ctx context.Context, changed func(string), live func(bool)) {
	ping := r.PingEvery
	if ping <= 0 {
		ping = 15 * time.Second
	}
	for ctx.Err() == nil {
		r.listenOnce(ctx, ping, changed, live)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (r *RedisInvalidations) listenOnce(ctx context.Context, ping time.Duration, changed func(string), live func(bool)) {
	ps := r.client.Subscribe(ctx, r.channel)
	defer ps.Close()
	up, pinged := false, false
	defer func() {
		if up {
			live(false)
		}
	}()
	for {
		msg, err := ps.ReceiveTimeout(ctx, ping)
		if err != nil {
			var nerr net.Error
			if ctx.Err() != nil || !up || pinged || !errors.As(err, &nerr) || !nerr.Timeout() {
				return // broken, or silent even to a ping
			}
			if ps.Ping(ctx) != nil {
				return
			}
			pinged = true
			continue
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && !up {
				up = true
				live(true)
			}
		case *redis.Message:
			sender, key, ok := strings.Cut(m.Payload, " ")
			if ok && sender != r.sender && key != "" {
				changed(key)
			}
		}
	}
}
