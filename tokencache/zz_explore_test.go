package tokencache

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func BenchmarkExploreFixedClock(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			s := benchCache(b, size.n)
			t0 := time.Now()
			s.c.now = func() time.Time { return t0 }
			defer func() { s.c.now = time.Now }()
			keys := s.keys
			i := 0
			ctx := context.Background()
			for b.Loop() {
				s.c.Get(ctx, keys[i])
				if i++; i == len(keys) {
					i = 0
				}
			}
		})
	}
}

func BenchmarkExploreMap(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			s := benchCache(b, size.n)
			m := make(map[Key]Token, size.n)
			for _, k := range s.keys {
				m[k] = benchToken(k)
			}
			keys := s.keys
			i := 0
			var sink Token
			for b.Loop() {
				sink = m[keys[i]]
				if i++; i == len(keys) {
					i = 0
				}
			}
			_ = fmt.Sprint(sink.Value[:0])
		})
	}
}
