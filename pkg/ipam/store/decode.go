package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
)

// DecodeRecord decodes one stored record into v strictly, as every store
// reads what it wrote: one JSON value, no field v does not have, nothing
// after it. Anything else is a record written by someone else, or damaged.
func DecodeRecord(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the record")
	}
	return nil
}
