package kit

import (
	"slices"
	"strconv"
	"time"
)

// Number is what the statistics work on: counts, durations, ratios.
type Number interface {
	~int | ~int64 | ~float64
}

// Median is the middle value (between the two middle ones for an even
// count); zero for none.
func Median[T Number](xs []T) T {
	return Quantile(xs, 0.5)
}

// Quantile is the q-quantile (0..1), interpolated linearly; zero for none.
func Quantile[T Number](xs []T, q float64) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	pos := q * float64(len(s)-1)
	i := int(pos)
	if i+1 >= len(s) {
		return s[len(s)-1]
	}
	return s[i] + T(float64(s[i+1]-s[i])*(pos-float64(i)))
}

// Max is the largest value; zero for none.
func Max[T Number](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	return slices.Max(xs)
}

// Ms formats a duration as milliseconds with one decimal, as the tables do.
func Ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64)
}

// MiB formats KiB as MiB with one decimal.
func MiB(kib int) string {
	return strconv.FormatFloat(float64(kib)/1024, 'f', 1, 64)
}
