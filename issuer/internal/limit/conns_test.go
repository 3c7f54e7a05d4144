package limit

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

type fakeConn struct {
	net.Conn
	addr   net.Addr
	closed atomic.Bool
}

func (c *fakeConn) RemoteAddr() net.Addr { return c.addr }
func (c *fakeConn) Close() error         { c.closed.Store(true); return nil }

// fakeListener hands out the queued connections, then says it is closed.
type fakeListener struct{ q chan net.Conn }

func (l *fakeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.q:
		return c, nil
	default:
		return nil, net.ErrClosed
	}
}
func (l *fakeListener) Close() error   { return nil }
func (l *fakeListener) Addr() net.Addr { return &net.TCPAddr{} }

func from(ip string) *fakeConn {
	return &fakeConn{addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}}
}

// accept runs one Accept over the given connections: the admitted one, or
// nil when every one was closed.
func accept(t *testing.T, c *Conns, conns ...*fakeConn) net.Conn {
	t.Helper()
	l := &fakeListener{q: make(chan net.Conn, len(conns))}
	for _, fc := range conns {
		l.q <- fc
	}
	got, err := c.Listener(l).Accept()
	if err != nil {
		if !errors.Is(err, net.ErrClosed) {
			t.Fatal(err)
		}
		return nil
	}
	return got
}

func TestConnsBounds(t *testing.T) {
	now := time.Unix(1000, 0)
	refused := map[string]int{}
	c := NewConns(ConnsOptions{Max: 3, PerAddr: 2, EvictNewAfter: time.Second,
		Now: func() time.Time { return now }, Refused: func(r string) { refused[r]++ }})

	a1, a2, a3 := from("10.0.0.1"), from("10.0.0.1"), from("10.0.0.1")
	g1, g2 := accept(t, c, a1), accept(t, c, a2)
	if g1 == nil || g2 == nil {
		t.Fatal("the first two connections of an address were not admitted")
	}
	// A third from the same address is closed at once; the next one in
	// the queue (another address) is what Accept returns.
	b1 := from("10.0.0.2")
	if got := accept(t, c, a3, b1); got == nil || got.RemoteAddr() != b1.addr || !a3.closed.Load() {
		t.Fatalf("per-address bound: got %v, third closed %v", got, a3.closed.Load())
	}
	// Both of 10.0.0.1's connections are in the middle of a request, and
	// 10.0.0.2's is new (less than a second old): nothing may make room.
	c.ConnState(g1, http.StateActive)
	c.ConnState(g2, http.StateActive)
	d1 := from("10.0.0.4")
	if got := accept(t, c, d1); got != nil || !d1.closed.Load() {
		t.Fatal("a connection over the total bound was admitted while none could make room")
	}
	// A second later the new connection that sent nothing may be replaced.
	now = now.Add(time.Second)
	d2 := from("10.0.0.4")
	if got := accept(t, c, d2); got == nil || !b1.closed.Load() {
		t.Fatal("a stalled new connection did not make room")
	}
	// An idle connection (between requests) makes room at once; the active
	// one never does.
	c.ConnState(g2, http.StateIdle)
	d3 := from("10.0.0.5")
	if got := accept(t, c, d3); got == nil || !a2.closed.Load() || a1.closed.Load() {
		t.Fatalf("idle eviction: admitted %v, idle closed %v, active closed %v", got, a2.closed.Load(), a1.closed.Load())
	}
	if c.Open() != 3 {
		t.Fatalf("Open() = %d, want 3", c.Open())
	}
	// Closing frees the slot and the address's count (through a TLS
	// connection too, as the HTTP server reports it).
	c.ConnState(tls.Server(g1, &tls.Config{}), http.StateClosed)
	if c.Open() != 2 {
		t.Fatalf("after a close: Open() = %d, want 2", c.Open())
	}
	if got := accept(t, c, from("10.0.0.1"), from("10.0.0.1")); got == nil {
		t.Fatal("10.0.0.1 could not connect again after its connections closed")
	}
	want := map[string]int{RefusedPerAddr: 1, RefusedTotal: 1, Evicted: 2}
	for k, v := range want {
		if refused[k] != v {
			t.Errorf("refused[%s] = %d, want %d (all: %v)", k, refused[k], v, refused)
		}
	}
}

func TestPendingBounds(t *testing.T) {
	p := NewPending(3, 2)
	for i := range 2 {
		if ok, _ := p.TryEnter("a"); !ok {
			t.Fatalf("a's slot %d refused", i+1)
		}
	}
	if ok, why := p.TryEnter("a"); ok || why != PendingPerAddr {
		t.Fatalf("a's third: %v %q", ok, why)
	}
	if ok, _ := p.TryEnter("b"); !ok {
		t.Fatal("b refused")
	}
	if ok, why := p.TryEnter("c"); ok || why != PendingTotal {
		t.Fatalf("over the total: %v %q", ok, why)
	}
	p.Leave("a")
	if ok, _ := p.TryEnter("c"); !ok {
		t.Fatal("a freed slot was not granted")
	}
	if p.InUse() != 3 {
		t.Fatalf("InUse = %d", p.InUse())
	}
}
