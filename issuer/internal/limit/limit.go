// Package limit bounds the work the issuer takes on, so that a flood answers
// at once instead of queueing: how many exchanges may wait on the API server
// together (Gate), and how often one subject token may be presented (PerKey).
package limit

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// Gate admits at most n holders at once; it never queues.
type Gate struct {
	slots chan struct{}
	peak  atomic.Int64
}

// NewGate returns a gate with n slots.
func NewGate(n int) *Gate { return &Gate{slots: make(chan struct{}, n)} }

// TryEnter takes a slot if one is free.
func (g *Gate) TryEnter() bool {
	select {
	case g.slots <- struct{}{}:
		for n := int64(len(g.slots)); ; {
			if p := g.peak.Load(); n <= p || g.peak.CompareAndSwap(p, n) {
				break
			}
		}
		return true
	default:
		return false
	}
}

// Leave frees a slot taken by TryEnter.
func (g *Gate) Leave() { <-g.slots }

// InUse is the number of slots taken.
func (g *Gate) InUse() int { return len(g.slots) }

// Peak is the most slots ever taken at once.
func (g *Gate) Peak() int { return int(g.peak.Load()) }

// PerKey allows each key at most Limit times per fixed window. Memory is
// bounded: counts live for one window, and at most MaxKeys keys are tracked
// per window (beyond that, new keys pass: only tokens that the cluster signed
// reach this limiter, so its table cannot be filled with garbage).
type PerKey struct {
	limit   int
	window  time.Duration
	maxKeys int
	now     func() time.Time

	// Keys are counted by a 64-bit hash under this process's random seed:
	// nobody outside can aim two tokens at one count, and by chance two of
	// one window's tokens share one with a probability of about 2^-64 a pair
	// (they would then share a budget). No copy of the token is kept.
	seed   maphash.Seed
	mu     sync.Mutex
	start  time.Time
	counts map[uint64]int
}

// NewPerKey allows limit uses of a key per window; now is the clock (time.Now when nil).
func NewPerKey(limit int, window time.Duration, maxKeys int, now func() time.Time) *PerKey {
	if now == nil {
		now = time.Now
	}
	return &PerKey{limit: limit, window: window, maxKeys: maxKeys, now: now, seed: maphash.MakeSeed(), counts: map[uint64]int{}}
}

// Limit is the number of uses allowed per window.
func (p *PerKey) Limit() int { return p.limit }

// Allow counts one use of key; when the key is over its limit it returns
// false and how long until the window ends.
func (p *PerKey) Allow(key string) (bool, time.Duration) {
	k := maphash.String(p.seed, key)
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if now.Sub(p.start) >= p.window || now.Before(p.start) {
		p.start = now
		clear(p.counts)
	}
	n, seen := p.counts[k]
	if !seen && len(p.counts) >= p.maxKeys {
		return true, 0
	}
	if n >= p.limit {
		return false, p.start.Add(p.window).Sub(now)
	}
	p.counts[k] = n + 1
	return true, 0
}

// perAddr counts holders by client address and bounds each address to max
// (0: no bound, nothing counted). Its owner locks around it.
type perAddr struct {
	max int
	n   map[string]int
}

func newPerAddr(max int) perAddr { return perAddr{max: max, n: map[string]int{}} }

// take counts one more holder for addr, unless addr is at its bound.
func (p *perAddr) take(addr string) bool {
	if p.max <= 0 {
		return true
	}
	if p.n[addr] >= p.max {
		return false
	}
	p.n[addr]++
	return true
}

// give counts one holder of addr less.
func (p *perAddr) give(addr string) {
	if p.max <= 0 {
		return
	}
	if p.n[addr]--; p.n[addr] <= 0 {
		delete(p.n, addr)
	}
}

// Pending admits at most max requests at once, and at most perAddr of them
// from one client address (0: no such bound); it never queues. One address
// (a Pod) cannot take every slot: others still get in while it stalls.
type Pending struct {
	*Gate

	mu     sync.Mutex
	byAddr perAddr
}

// NewPending returns the bound.
func NewPending(max, perAddr int) *Pending {
	return &Pending{Gate: NewGate(max), byAddr: newPerAddr(perAddr)}
}

// Reasons TryEnter refuses; they label a metric.
const (
	PendingTotal   = "max_pending_requests"
	PendingPerAddr = "max_pending_requests_per_address"
)

// TryEnter takes a slot for addr, or says which bound refused it.
func (p *Pending) TryEnter(addr string) (bool, string) {
	p.mu.Lock()
	ok := p.byAddr.take(addr)
	p.mu.Unlock()
	if !ok {
		return false, PendingPerAddr
	}
	if !p.Gate.TryEnter() {
		p.leaveAddr(addr)
		return false, PendingTotal
	}
	return true, ""
}

// Leave frees addr's slot taken by TryEnter.
func (p *Pending) Leave(addr string) {
	p.Gate.Leave()
	p.leaveAddr(addr)
}

func (p *Pending) leaveAddr(addr string) {
	p.mu.Lock()
	p.byAddr.give(addr)
	p.mu.Unlock()
}
