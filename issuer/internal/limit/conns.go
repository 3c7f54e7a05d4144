package limit

import (
	"container/list"
	"net"
	"net/http"
	"sync"
	"time"
)

// Conns bounds the connections a listener hands to an HTTP server, before a
// byte of them is read: at most Max in all and at most PerAddr from one
// client address (a Pod). A connection over a bound is closed as soon as it
// is accepted, unless, at Max, a connection that holds no request can make
// room: the one idle the longest (between requests), or else the oldest that
// has not sent a request within EvictNewAfter (a slow or stalled handshake).
// A connection in the middle of a request is never closed for room.
//
// The HTTP server must report connection states through ConnState, so that
// Conns knows which connections are idle.
type Conns struct {
	max           int
	evictNewAfter time.Duration
	now           func() time.Time
	refused       func(reason string)

	mu     sync.Mutex
	byAddr perAddr
	open   map[*conn]*list.Element
	// order lists the open connections that hold no request, oldest first.
	order *list.List
}

// Reasons a connection is closed for; they label a metric.
const (
	RefusedTotal   = "max_connections"
	RefusedPerAddr = "max_connections_per_address"
	Evicted        = "evicted"
)

// ConnsOptions configure Conns.
type ConnsOptions struct {
	// Max bounds the open connections in all; required.
	Max int
	// PerAddr bounds the open connections from one client IP; 0 means no bound.
	PerAddr int
	// EvictNewAfter is how long a new connection may go without a request
	// before a newcomer at Max may take its place; default one second.
	EvictNewAfter time.Duration
	// Refused is told each connection closed for a bound, with its reason.
	Refused func(reason string)
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// NewConns returns a connection bound.
func NewConns(o ConnsOptions) *Conns {
	c := &Conns{max: o.Max, evictNewAfter: o.EvictNewAfter, now: o.Now, refused: o.Refused,
		byAddr: newPerAddr(o.PerAddr), open: map[*conn]*list.Element{}, order: list.New()}
	if c.evictNewAfter <= 0 {
		c.evictNewAfter = time.Second
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.refused == nil {
		c.refused = func(string) {}
	}
	return c
}

// Open is the number of connections open now.
func (c *Conns) Open() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.open)
}

// Listener wraps ln: its Accept returns only connections within the bounds.
func (c *Conns) Listener(ln net.Listener) net.Listener { return &listener{Listener: ln, c: c} }

type listener struct {
	net.Listener
	c *Conns
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if cc := l.c.admit(nc); cc != nil {
			return cc, nil
		}
	}
}

// conn is an admitted connection. Conns.open maps it to its place in
// Conns.order while it holds no request (nil while it does).
type conn struct {
	net.Conn
	c     *Conns
	addr  string
	since time.Time
	seen  bool // a request has started on it
	once  sync.Once
}

func (cc *conn) Close() error {
	cc.once.Do(cc.c.forget(cc))
	return cc.Conn.Close()
}

func addrOf(nc net.Conn) string {
	if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(nc.RemoteAddr().String())
	if err != nil {
		return nc.RemoteAddr().String()
	}
	return host
}

// admit returns the wrapped connection, or nil after closing one over a bound.
func (c *Conns) admit(nc net.Conn) *conn {
	addr := addrOf(nc)
	now := c.now()
	c.mu.Lock()
	if !c.byAddr.take(addr) {
		c.mu.Unlock()
		_ = nc.Close()
		c.refused(RefusedPerAddr)
		return nil
	}
	var victim *conn
	if len(c.open) >= c.max {
		victim = c.victimLocked(now)
		if victim == nil {
			c.byAddr.give(addr)
			c.mu.Unlock()
			_ = nc.Close()
			c.refused(RefusedTotal)
			return nil
		}
		c.dropLocked(victim)
	}
	cc := &conn{Conn: nc, c: c, addr: addr, since: now}
	c.open[cc] = c.order.PushBack(cc)
	c.mu.Unlock()
	if victim != nil {
		victim.once.Do(func() {})
		_ = victim.Conn.Close()
		c.refused(Evicted)
	}
	return cc
}

// victimLocked picks a connection without a request that may make room:
// order holds them oldest first, idle ones and new ones alike; an idle one
// always qualifies, a new one once it has waited evictNewAfter.
func (c *Conns) victimLocked(now time.Time) *conn {
	for e := c.order.Front(); e != nil; e = e.Next() {
		cc := e.Value.(*conn)
		if cc.seen || now.Sub(cc.since) >= c.evictNewAfter {
			return cc
		}
	}
	return nil
}

// dropLocked stops tracking cc.
func (c *Conns) dropLocked(cc *conn) {
	e, ok := c.open[cc]
	if !ok {
		return
	}
	if e != nil {
		c.order.Remove(e)
	}
	delete(c.open, cc)
	c.byAddr.give(cc.addr)
}

func (c *Conns) forget(cc *conn) func() {
	return func() {
		c.mu.Lock()
		c.dropLocked(cc)
		c.mu.Unlock()
	}
}

// ConnState is the http.Server's ConnState hook: it moves connections in and
// out of the evictable order as requests start and end (HTTP/2 connections
// are active while any stream is open).
func (c *Conns) ConnState(nc net.Conn, state http.ConnState) {
	cc := unwrap(nc)
	if cc == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.open[cc]
	if !ok {
		return
	}
	switch state {
	case http.StateActive:
		if e != nil {
			c.order.Remove(e)
			c.open[cc] = nil
		}
		cc.seen = true
	case http.StateIdle:
		if e == nil {
			cc.since = c.now()
			c.open[cc] = c.order.PushBack(cc)
		}
	case http.StateHijacked, http.StateClosed:
		c.dropLocked(cc)
	}
}

// unwrap finds the *conn under a TLS connection (the server reports states
// of the *tls.Conn it made of ours).
func unwrap(nc net.Conn) *conn {
	for range 4 {
		switch v := nc.(type) {
		case *conn:
			return v
		case interface{ NetConn() net.Conn }:
			nc = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}
