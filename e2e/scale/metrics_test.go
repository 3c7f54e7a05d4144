package scale

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"k8s.io/client-go/kubernetes"
)

// apiCounts are the API server's request counters that matter here.
type apiCounts struct {
	TokenReviews float64 `json:"tokenreviews"` // POST tokenreviews
	PodGets      float64 `json:"pod_gets"`     // GET one pod
	SAGets       float64 `json:"sa_gets"`      // GET one serviceaccount
	ListWatch    float64 `json:"list_watch"`   // LIST and WATCH of pods and serviceaccounts
	TooMany      float64 `json:"http_429"`     // any request answered 429
	Rejected     float64 `json:"apf_rejected"` // API Priority and Fairness rejections
}

// issuerCalls is what the issuers cost the API server per exchange.
func (a apiCounts) issuerCalls() float64 { return a.TokenReviews + a.PodGets + a.SAGets }

func (a apiCounts) minus(b apiCounts) apiCounts {
	return apiCounts{a.TokenReviews - b.TokenReviews, a.PodGets - b.PodGets, a.SAGets - b.SAGets,
		a.ListWatch - b.ListWatch, a.TooMany - b.TooMany, a.Rejected - b.Rejected}
}

// scrapeAPI reads the API server's /metrics (apiserver_request_total,
// apiserver_flowcontrol_rejected_requests_total).
func scrapeAPI(ctx context.Context, cs kubernetes.Interface) (apiCounts, error) {
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return apiCounts{}, err
	}
	var a apiCounts
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "apiserver_request_total{"):
			l, v := labels(line)
			if l["code"] == "429" {
				a.TooMany += v
			}
			switch res, verb := l["resource"], l["verb"]; {
			case res == "tokenreviews" && verb == "POST":
				a.TokenReviews += v
			case res == "pods" && verb == "GET" && l["subresource"] == "":
				a.PodGets += v
			case res == "serviceaccounts" && verb == "GET" && l["subresource"] == "":
				a.SAGets += v
			case (res == "pods" || res == "serviceaccounts") && (verb == "LIST" || verb == "WATCH"):
				a.ListWatch += v
			}
		case strings.HasPrefix(line, "apiserver_flowcontrol_rejected_requests_total{"):
			_, v := labels(line)
			a.Rejected += v
		}
	}
	return a, sc.Err()
}

// labels parses `name{a="b",c="d"} value`.
func labels(line string) (map[string]string, float64) {
	open, close := strings.IndexByte(line, '{'), strings.LastIndexByte(line, '}')
	out := map[string]string{}
	if open < 0 || close < open {
		return out, 0
	}
	for _, kv := range strings.Split(line[open+1:close], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if ok {
			out[k] = strings.Trim(v, `"`)
		}
	}
	v, _ := strconv.ParseFloat(strings.TrimSpace(line[close+1:]), 64)
	return out, v
}

// procUsage is a process's resident memory (bytes) and CPU time (seconds).
func procUsage(pid int) (rss int64, cpu float64, err error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			rss = kb * 1024
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// Fields after the command's closing parenthesis: utime is the 12th, stime the 13th (clock ticks, 100/s).
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(fields) < 13 {
		return rss, 0, fmt.Errorf("/proc/%d/stat: too short", pid)
	}
	ut, _ := strconv.ParseFloat(fields[11], 64)
	st, _ := strconv.ParseFloat(fields[12], 64)
	return rss, (ut + st) / 100, nil
}
