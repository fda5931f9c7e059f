/* ecgret native serial protocol: reference frame encoder. See ecgret_frame.h and ../PROTOCOL.md. */
#include "ecgret_frame.h"

#include <string.h>

uint16_t ecgret_crc16(uint16_t crc, const uint8_t *data, size_t len)
{
    size_t i;
    int b;
    for (i = 0; i < len; i++) {
        crc ^= (uint16_t)((uint16_t)data[i] << 8);
        for (b = 0; b < 8; b++) {
            crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
        }
    }
    return crc;
}

uint16_t ecgret_crc_init(void)
{
    const uint8_t v = (uint8_t)ECGRET_PROTOCOL_VERSION;
    return ecgret_crc16(0xFFFFu, &v, 1);
}

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)((v >> 8) & 0xFFu);
    p[2] = (uint8_t)((v >> 16) & 0xFFu);
    p[3] = (uint8_t)((v >> 24) & 0xFFu);
}

static void put_f32(uint8_t *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    put_u32(p, u);
}

/* Write header and CRC around a payload already placed at out + 7. */
static size_t finish(uint8_t *out, uint8_t type, uint16_t seq, uint16_t len)
{
    uint16_t crc;
    out[0] = ECGRET_SYNC0;
    out[1] = ECGRET_SYNC1;
    out[2] = type;
    put_u16(out + 3, seq);
    put_u16(out + 5, len);
    crc = ecgret_crc16(ecgret_crc_init(), out + 2, (size_t)5 + len);
    put_u16(out + ECGRET_HEADER_LEN + len, crc);
    return (size_t)ECGRET_OVERHEAD + len;
}

size_t ecgret_encode_frame(uint8_t *out, size_t cap, uint8_t type, uint16_t seq,
                           const uint8_t *payload, uint16_t len)
{
    if (len > ECGRET_MAX_PAYLOAD || cap < (size_t)ECGRET_OVERHEAD + len) return 0;
    if (len && payload != out + ECGRET_HEADER_LEN) memmove(out + ECGRET_HEADER_LEN, payload, len);
    return finish(out, type, seq, len);
}

size_t ecgret_encode_data(uint8_t *out, size_t cap, uint16_t seq, uint32_t first_sample,
                          const int32_t *counts, uint8_t n_samp, uint8_t n_ch,
                          uint8_t sample_bits, uint32_t lead_off)
{
    size_t sb, n, i, len;
    uint8_t *p;
    if (sample_bits != 16 && sample_bits != 24) return 0;
    if (n_samp == 0 || n_ch == 0) return 0;
    sb = sample_bits / 8u;
    n = (size_t)n_samp * n_ch;
    len = ECGRET_DATA_HEAD + n * sb;
    if (len > ECGRET_MAX_PAYLOAD || cap < ECGRET_OVERHEAD + len) return 0;
    p = out + ECGRET_HEADER_LEN;
    put_u32(p, first_sample);
    p[4] = n_ch;
    p[5] = n_samp;
    p[6] = (uint8_t)sb;
    p[7] = 0; /* flags, reserved */
    put_u32(p + 8, lead_off);
    p += ECGRET_DATA_HEAD;
    for (i = 0; i < n; i++) {
        uint32_t u = (uint32_t)counts[i]; /* two's complement, low bytes first */
        p[0] = (uint8_t)(u & 0xFFu);
        p[1] = (uint8_t)((u >> 8) & 0xFFu);
        if (sb == 3) p[2] = (uint8_t)((u >> 16) & 0xFFu);
        p += sb;
    }
    return finish(out, ECGRET_T_DATA, seq, (uint16_t)len);
}

size_t ecgret_encode_info(uint8_t *out, size_t cap, uint16_t seq, uint8_t n_ch,
                          uint8_t adc_bits, uint8_t sample_bits, float fs_hz,
                          float gain_uv_per_count, uint8_t samples_per_frame,
                          const char *names, const char *desc)
{
    size_t ln = names ? strlen(names) : 0, ld = desc ? strlen(desc) : 0;
    size_t len = ECGRET_INFO_HEAD + ln + 1 + ld;
    uint8_t *p;
    if (sample_bits != 16 && sample_bits != 24) return 0;
    if (len > ECGRET_MAX_PAYLOAD || cap < ECGRET_OVERHEAD + len) return 0;
    p = out + ECGRET_HEADER_LEN;
    p[0] = (uint8_t)ECGRET_PROTOCOL_VERSION;
    p[1] = n_ch;
    p[2] = adc_bits;
    p[3] = (uint8_t)(sample_bits / 8u);
    put_f32(p + 4, fs_hz);
    put_f32(p + 8, gain_uv_per_count);
    p[12] = samples_per_frame;
    p[13] = 0;
    if (ln) memcpy(p + ECGRET_INFO_HEAD, names, ln);
    p[ECGRET_INFO_HEAD + ln] = 0;
    if (ld) memcpy(p + ECGRET_INFO_HEAD + ln + 1, desc, ld);
    return finish(out, ECGRET_T_INFO, seq, (uint16_t)len);
}

size_t ecgret_encode_status(uint8_t *out, size_t cap, uint16_t seq, uint8_t code,
                            const uint8_t *extra, uint16_t n_extra)
{
    size_t len = (size_t)1 + n_extra;
    if (len > ECGRET_MAX_PAYLOAD || cap < ECGRET_OVERHEAD + len) return 0;
    out[ECGRET_HEADER_LEN] = code;
    if (n_extra) memmove(out + ECGRET_HEADER_LEN + 1, extra, n_extra);
    return finish(out, ECGRET_T_STATUS, seq, (uint16_t)len);
}

size_t ecgret_encode_error(uint8_t *out, size_t cap, uint16_t seq, uint8_t code, const char *msg)
{
    size_t lm = msg ? strlen(msg) : 0;
    size_t len = 1 + lm;
    if (len > ECGRET_MAX_PAYLOAD || cap < ECGRET_OVERHEAD + len) return 0;
    out[ECGRET_HEADER_LEN] = code;
    if (lm) memcpy(out + ECGRET_HEADER_LEN + 1, msg, lm);
    return finish(out, ECGRET_T_ERROR, seq, (uint16_t)len);
}

int ecgret_check_frame(const uint8_t *buf, size_t n, uint8_t *type, uint16_t *seq,
                       const uint8_t **payload, uint16_t *len)
{
    uint16_t l, crc;
    if (n < 1) return 0;
    if (buf[0] != ECGRET_SYNC0) return -1;
    if (n < 2) return 0;
    if (buf[1] != ECGRET_SYNC1) return -1;
    if (n < ECGRET_HEADER_LEN) return 0;
    l = (uint16_t)(buf[5] | (buf[6] << 8));
    if (l > ECGRET_MAX_PAYLOAD) return -1;
    if (n < (size_t)ECGRET_OVERHEAD + l) return 0;
    crc = (uint16_t)(buf[ECGRET_HEADER_LEN + l] | (buf[ECGRET_HEADER_LEN + l + 1] << 8));
    if (crc != ecgret_crc16(ecgret_crc_init(), buf + 2, (size_t)5 + l)) return -1;
    if (type) *type = buf[2];
    if (seq) *seq = (uint16_t)(buf[3] | (buf[4] << 8));
    if (payload) *payload = buf + ECGRET_HEADER_LEN;
    if (len) *len = l;
    return (int)(ECGRET_OVERHEAD + l);
}
