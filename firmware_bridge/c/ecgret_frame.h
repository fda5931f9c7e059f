/*
 * ecgret native serial protocol: reference frame encoder for board firmware.
 *
 * Portable C99, no allocation, no I/O: every function writes into a caller buffer and
 * returns the number of bytes written (0 when the buffer is too small or an argument is
 * out of range). The byte layout is specified in ../PROTOCOL.md; the host tests compile
 * this file with gcc and check its output against the spec's golden vectors.
 *
 * Floats (fs, gain) are written as IEEE 754 binary32 little-endian, which is what
 * `float` is on AVR, ARM Cortex-M, ESP32 and RP2040.
 */
#ifndef ECGRET_FRAME_H
#define ECGRET_FRAME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ECGRET_PROTOCOL_VERSION 1u
#define ECGRET_SYNC0 0xA5u
#define ECGRET_SYNC1 0x5Au
#define ECGRET_HEADER_LEN 7u
#define ECGRET_OVERHEAD 9u
#define ECGRET_MAX_PAYLOAD 1024u
#define ECGRET_DATA_HEAD 12u
#define ECGRET_INFO_HEAD 14u

/* frame types: board -> host */
#define ECGRET_T_INFO 0x01u
#define ECGRET_T_DATA 0x02u
#define ECGRET_T_STATUS 0x03u
#define ECGRET_T_ERROR 0x04u
#define ECGRET_T_PONG 0x05u
/* frame types: host -> board */
#define ECGRET_T_HELLO 0x10u
#define ECGRET_T_START 0x11u
#define ECGRET_T_STOP 0x12u
#define ECGRET_T_PING 0x13u

/* STATUS codes */
#define ECGRET_ST_OK 0x00u
#define ECGRET_ST_STARTED 0x01u
#define ECGRET_ST_STOPPED 0x02u
#define ECGRET_ST_LEAD_OFF 0x03u
#define ECGRET_ST_OVERFLOW 0x04u
/* ERROR codes */
#define ECGRET_ERR_BAD_COMMAND 0x01u
#define ECGRET_ERR_BAD_CRC 0x02u
#define ECGRET_ERR_NOT_STREAMING 0x03u
#define ECGRET_ERR_ADC_FAULT 0x04u
#define ECGRET_ERR_OVERFLOW 0x05u

/* CRC-16/CCITT-FALSE update (poly 0x1021, MSB first). Start from 0xFFFF. */
uint16_t ecgret_crc16(uint16_t crc, const uint8_t *data, size_t len);

/* CRC register after folding in the protocol version byte: ecgret_crc16(0xFFFF, &version, 1). */
uint16_t ecgret_crc_init(void);

/* A frame around an arbitrary payload (payload may alias out + 7). */
size_t ecgret_encode_frame(uint8_t *out, size_t cap, uint8_t type, uint16_t seq,
                           const uint8_t *payload, uint16_t len);

/* DATA frame: counts holds n_samp x n_ch values, sample-major (s0c0 s0c1 ... s1c0 ...).
 * sample_bits is 24 or 16; lead_off bit i set = channel i electrode off. */
size_t ecgret_encode_data(uint8_t *out, size_t cap, uint16_t seq, uint32_t first_sample,
                          const int32_t *counts, uint8_t n_samp, uint8_t n_ch,
                          uint8_t sample_bits, uint32_t lead_off);

/* INFO frame (answer to HELLO). names: comma-separated channel names; desc: free text. */
size_t ecgret_encode_info(uint8_t *out, size_t cap, uint16_t seq, uint8_t n_ch,
                          uint8_t adc_bits, uint8_t sample_bits, float fs_hz,
                          float gain_uv_per_count, uint8_t samples_per_frame,
                          const char *names, const char *desc);

/* STATUS frame: code then extra bytes (may be NULL when n_extra is 0). */
size_t ecgret_encode_status(uint8_t *out, size_t cap, uint16_t seq, uint8_t code,
                            const uint8_t *extra, uint16_t n_extra);

/* ERROR frame: code then a UTF-8 message (may be NULL). */
size_t ecgret_encode_error(uint8_t *out, size_t cap, uint16_t seq, uint8_t code, const char *msg);

/* Check one received frame at buf (e.g. a host command). Returns the frame length when
 * buf holds a complete valid frame, 0 when more bytes are needed, -1 when buf does not
 * start with a valid frame (drop one byte and try again). */
int ecgret_check_frame(const uint8_t *buf, size_t n, uint8_t *type, uint16_t *seq,
                       const uint8_t **payload, uint16_t *len);

#ifdef __cplusplus
}
#endif
#endif /* ECGRET_FRAME_H */
