package proxy_test

import (
	"context"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/proxy"
)

// The benchmarks run each case directly and through the proxy, side by
// side in one run (go test -run '^$' -bench BenchmarkProxy ./internal/proxy/):
// compare the sub-benchmarks' figures. Figures go to the README, never
// into an assertion.

const (
	requestSize = 64
	bulkSize    = 100 << 20
	bulkChunk   = 256 << 10
)

// benchServer answers each requestSize-byte request with as many bytes,
// and a request starting with 'B' with bulkSize bytes.
func benchServer(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				req := make([]byte, requestSize)
				chunk := make([]byte, bulkChunk)
				for {
					if _, err := io.ReadFull(c, req); err != nil {
						return
					}
					if req[0] != 'B' {
						if _, err := c.Write(req); err != nil {
							return
						}
						continue
					}
					for sent := 0; sent < bulkSize; sent += bulkChunk {
						if _, err := c.Write(chunk); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	b.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// benchTargets returns the server's address and the proxy's in front of it.
func benchTargets(b *testing.B) map[string]string {
	b.Helper()
	server := benchServer(b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	p := proxy.New(ln, proxy.Options{HoldTimeout: time.Minute})
	p.SetTarget(server)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Serve(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	return map[string]string{"direct": server, "proxied": ln.Addr().String()}
}

var benchCases = []string{"direct", "proxied"}

// reportLatency adds the p50 and p99 of the samples as metrics.
func reportLatency(b *testing.B, samples []time.Duration) {
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(samples[len(samples)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkProxyRoundTrip: one small request and its answer on a kept-alive
// connection.
func BenchmarkProxyRoundTrip(b *testing.B) {
	targets := benchTargets(b)
	for _, name := range benchCases {
		b.Run(name, func(b *testing.B) {
			c, err := net.Dial("tcp", targets[name])
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, requestSize)
			samples := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
				samples = append(samples, time.Since(start))
			}
			b.StopTimer()
			reportLatency(b, samples)
		})
	}
}

// BenchmarkProxyConnect: connect, one small request and its answer, close:
// the proxy's cost per connection (accept, dial, two copies).
func BenchmarkProxyConnect(b *testing.B) {
	targets := benchTargets(b)
	for _, name := range benchCases {
		b.Run(name, func(b *testing.B) {
			buf := make([]byte, requestSize)
			samples := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				c, err := net.Dial("tcp", targets[name])
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
				c.Close()
				samples = append(samples, time.Since(start))
			}
			b.StopTimer()
			reportLatency(b, samples)
		})
	}
}

// BenchmarkProxyThroughput: 100 MB from the server to the client per op.
func BenchmarkProxyThroughput(b *testing.B) {
	targets := benchTargets(b)
	for _, name := range benchCases {
		b.Run(name, func(b *testing.B) {
			c, err := net.Dial("tcp", targets[name])
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			req := make([]byte, requestSize)
			req[0] = 'B'
			buf := make([]byte, bulkChunk)
			b.SetBytes(bulkSize)
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				for got := 0; got < bulkSize; {
					n, err := c.Read(buf[:min(len(buf), bulkSize-got)])
					if err != nil {
						b.Fatal(err)
					}
					got += n
				}
			}
		})
	}
}
