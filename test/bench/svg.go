package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// plot draws the millisecond distributions of the results (CNI ADD/DEL, time to ACTIVE, start-up)
// as horizontal bars, p50 solid and p99 light behind it, on a log scale: the figures span 10 ms to
// seconds. Plain SVG, no fonts or scripts beyond the viewer's sans-serif.
func plot(res Results) string {
	var rows []Row
	for _, r := range res.Rows {
		if r.Unit == "ms" && r.N > 1 && r.P50 > 0 {
			rows = append(rows, r)
		}
	}
	const (
		labelW = 330
		barW   = 520
		rowH   = 18
		top    = 54
		left   = 10
	)
	width := left + labelW + barW + 90
	height := top + rowH*len(rows) + 40
	lo, hi := 1.0, 10.0
	for _, r := range rows {
		for hi < r.P99 || hi < r.P50 {
			hi *= 10
		}
	}
	x := func(v float64) float64 {
		v = math.Max(v, lo)
		return left + labelW + barW*math.Log10(v/lo)/math.Log10(hi/lo)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="18" font-size="14" font-weight="bold">make bench: p50 (dark) and p99 (light), milliseconds, log scale</text>`+"\n", left)
	fmt.Fprintf(&b, `<text x="%d" y="34" fill="#555">%s, %d CPUs, kernel %s, load %s</text>`+"\n", left, html.EscapeString(res.Date), res.Machine.CPUs, html.EscapeString(res.Machine.Kernel), html.EscapeString(res.Machine.LoadAvg))
	for v := lo; v <= hi; v *= 10 {
		xv := x(v)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", xv, top-6, xv, top+rowH*len(rows))
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%s</text>`+"\n", xv, top+rowH*len(rows)+14, msLabel(v))
	}
	colors := map[string][2]string{
		"kuryr-pool": {"#1f77b4", "#aec7e8"}, "kuryr-noop": {"#d62728", "#ff9896"}, "bridge": {"#2ca02c", "#98df8a"},
	}
	for i, r := range rows {
		y := top + rowH*i
		c, ok := colors[r.Label]
		if !ok {
			c = [2]string{"#7f7f7f", "#c7c7c7"}
		}
		name := fmt.Sprintf("%s %s %s", r.Label, r.Scenario, r.Op)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", left, y+12, html.EscapeString(name))
		x0 := float64(left + labelW)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", x0, y+2, x(r.P99)-x0, rowH-4, c[1])
		fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", x0, y+5, x(r.P50)-x0, rowH-10, c[0])
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="#333">%s</text>`+"\n", x(r.P99)+4, y+12, msLabel(r.P50)+" / "+msLabel(r.P99))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func msLabel(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.3g s", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.0f ms", v)
	default:
		return fmt.Sprintf("%.2g ms", v)
	}
}
