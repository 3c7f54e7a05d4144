// Package scrape reads a Prometheus text exposition (what our binaries'
// /metrics serve) for the suites that check metrics.
package scrape

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// Samples fetches url and returns every sample by its series, the metric
// name with its labels as exposed (`name{a="b"}`), e.g.
// samples[`sts_webhook_admissions_total{injector="x",result="injected"}`].
func Samples(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i <= 0 {
			return nil, fmt.Errorf("%s: not a sample: %q", url, line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %w", url, line, err)
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// Names are the metric names of samples (labels cut off).
func Names(samples map[string]float64) map[string]bool {
	names := map[string]bool{}
	for series := range samples {
		name, _, _ := strings.Cut(series, "{")
		names[name] = true
	}
	return names
}

// Sum adds up every series of the metric name in samples whose labels
// include each of labels (written as exposed: `result="foreign"`; none: all
// series), 0 when there is none.
func Sum(samples map[string]float64, name string, labels ...string) float64 {
	sum := 0.0
	for series, v := range samples {
		n, set, _ := strings.Cut(series, "{")
		if n != name {
			continue
		}
		match := true
		for _, l := range labels {
			match = match && strings.Contains(set, l)
		}
		if match {
			sum += v
		}
	}
	return sum
}

// SumAt scrapes url and sums the metric name over its series.
func SumAt(url, name string) (float64, error) {
	samples, err := Samples(url)
	if err != nil {
		return 0, err
	}
	return Sum(samples, name), nil
}
