package scale

import (
	"fmt"
	"html"
	"strings"
)

// series is one line of a panel.
type series struct {
	name  string
	color string
	value func(point) float64
}

// plot draws the run as an SVG: four panels over time (exchanges a second by
// result; API calls a second by kind, with 429s; exchanges in flight; the
// share of simulated Pods holding a valid token), the fault bands shaded.
func plot(title string, points []point, bands []*band) string {
	const (
		width, left, right = 1000.0, 70.0, 20.0
		panelH, gap, top   = 150.0, 40.0, 40.0
	)
	panels := []struct {
		title string
		lines []series
	}{
		{"exchanges/s", []series{
			{"issued", "#2a7", func(p point) float64 { return p.OK }},
			{"transient failures", "#d72", func(p point) float64 { return p.Transient }},
			{"refused", "#c22", func(p point) float64 { return p.Refused }},
		}},
		{"API server calls/s (issuers)", []series{
			{"TokenReviews", "#36c", func(p point) float64 { return p.TokenReviews }},
			{"Pod GETs", "#93c", func(p point) float64 { return p.PodGets }},
			{"ServiceAccount GETs", "#c6c", func(p point) float64 { return p.SAGets }},
			{"list/watch", "#999", func(p point) float64 { return p.ListWatch }},
			{"429s", "#c22", func(p point) float64 { return p.TooMany }},
		}},
		{"exchanges in flight (loadgen)", []series{
			{"in flight", "#555", func(p point) float64 { return p.InFlight }},
		}},
		{"% of simulated Pods holding a valid token", []series{
			{"valid", "#2a7", func(p point) float64 {
				if p.Loops == 0 {
					return 0
				}
				return 100 * float64(p.Valid) / float64(p.Loops)
			}},
		}},
	}
	height := top + float64(len(panels))*(panelH+gap)
	tmax := 1.0
	for _, p := range points {
		tmax = max(tmax, p.T)
	}
	x := func(t float64) float64 { return left + (width-left-right)*t/tmax }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="%.0f" y="20" font-size="14">%s</text>`+"\n", left, html.EscapeString(title))
	for i, pan := range panels {
		y0 := top + float64(i)*(panelH+gap)
		ymax := 1.0
		for _, s := range pan.lines {
			for _, p := range points {
				ymax = max(ymax, s.value(p))
			}
		}
		ymax *= 1.1
		y := func(v float64) float64 { return y0 + panelH - panelH*v/ymax }
		for _, bd := range bands {
			to := bd.To
			if to < 0 {
				to = tmax
			}
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" opacity="0.15"/>`+"\n",
				x(bd.From), y0, max(1, x(to)-x(bd.From)), panelH, bandColor(bd.Name))
			if i == 0 {
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="9">%s</text>`+"\n", x(bd.From)+2, y0-3, html.EscapeString(bd.Name))
			}
		}
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.1f" width="%.0f" height="%.0f" fill="none" stroke="#888"/>`+"\n", left, y0, width-left-right, panelH)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%.4g</text><text x="%.0f" y="%.1f" text-anchor="end">0</text>`+"\n", left-4, y0+10, ymax, left-4, y0+panelH)
		legend := left + 4
		for _, s := range pan.lines {
			var pts []string
			for _, p := range points {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p.T), y(s.value(p))))
			}
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.2" points="%s"/>`+"\n", s.color, strings.Join(pts, " "))
			fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" fill="%s">%s</text>`+"\n", legend, y0+panelH+14, s.color, html.EscapeString(s.name))
			legend += 7*float64(len(s.name)) + 16
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" font-weight="bold" text-anchor="end">%s</text>`+"\n", width-right, y0-3, html.EscapeString(pan.title))
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="end">seconds: %.0f</text>`+"\n", width-right, height-4, tmax)
	b.WriteString("</svg>\n")
	return b.String()
}

func bandColor(name string) string {
	switch {
	case strings.Contains(name, "down"), strings.Contains(name, "killed"), strings.Contains(name, "restarted"):
		return "#c22"
	case strings.Contains(name, "recovery"):
		return "#d72"
	case strings.Contains(name, "steady"):
		return "#2a7"
	}
	return "#999"
}
