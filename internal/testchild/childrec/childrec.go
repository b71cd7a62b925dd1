// Package childrec is the record format of testchild: one JSON object a
// line, declared once for the child that writes it and the tests that read it.
package childrec

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
)

// Record is one line. Code is a pointer because 0 is a real exit code.
type Record struct {
	Event    string            `json:"event"`
	Pid      int               `json:"pid"`
	Ppid     int               `json:"ppid,omitempty"`
	Pgid     int               `json:"pgid,omitempty"`
	Signal   string            `json:"signal,omitempty"`
	Code     *int              `json:"code,omitempty"`
	Kind     string            `json:"kind,omitempty"`
	Children []int             `json:"children,omitempty"`
	Args     []string          `json:"args,omitempty"`
	Env      map[string]string `json:"env,omitempty"`
}

// Parse reads every complete line of data as a record. A line that is not
// a record is an error naming it, cut short: an environment can be large.
func Parse(data []byte) ([]Record, error) {
	var recs []Record
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("record line is not JSON (%v): %.200q", err, sc.Text())
		}
		recs = append(recs, r)
	}
	return recs, sc.Err()
}
