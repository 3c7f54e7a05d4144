// Package balancer forwards TCP connections on a loopback port to backends
// in turn, skipping one that refuses: what a Service does for the issuer's
// replicas where there is no kube-proxy (the soak, the scale harness). TLS
// passes through, so clients see the backends' certificates.
package balancer

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Balancer listens on 127.0.0.1:Port until the test ends.
type Balancer struct {
	Port     int
	mu       sync.Mutex
	backends []int
	next     int
	// Refused counts connections no backend took.
	Refused atomic.Int64
}

// New starts a balancer with no backends (connections are closed at once).
func New(t testing.TB) *Balancer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	b := &Balancer{Port: ln.Addr().(*net.TCPAddr).Port}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go b.forward(conn)
		}
	}()
	return b
}

// Set replaces the backends' loopback ports.
func (b *Balancer) Set(ports ...int) {
	b.mu.Lock()
	b.backends = ports
	b.mu.Unlock()
}

func (b *Balancer) forward(in net.Conn) {
	defer in.Close()
	b.mu.Lock()
	backends, first := b.backends, b.next
	b.next++
	b.mu.Unlock()
	for i := range backends {
		out, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", backends[(first+i)%len(backends)]), time.Second)
		if err != nil {
			continue
		}
		defer out.Close()
		go func() { _, _ = io.Copy(out, in); _ = out.(*net.TCPConn).CloseWrite() }()
		_, _ = io.Copy(in, out)
		return
	}
	b.Refused.Add(1)
}
