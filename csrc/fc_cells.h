/* fc_cells.h -- prototypes of the pointwise cell kernels (contract: csrc/fc_cells_impl.h).
 * Internal to fastcells: used by the Cython kernels; the public C API is fastcells.h. */
#ifndef FC_CELLS_H
#define FC_CELLS_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif

void fc_lstm_fwd_f32(ptrdiff_t rows, ptrdiff_t H, float *gates, const float *bias, const float *c_prev, float *c, float *h, float *h_copy);
void fc_lstm_bwd_f32(ptrdiff_t rows, ptrdiff_t H, float *gates, const float *c, const float *c_prev, const float *dy, const float *dh, float *dc);
void fc_gru_fwd_f32(ptrdiff_t rows, ptrdiff_t H, float *gx, const float *gh, const float *b_ih, const float *b_hh, const float *h_prev, float *h, float *h_copy, float *hn_save);
void fc_gru_bwd_f32(ptrdiff_t rows, ptrdiff_t H, float *gates, float *hn, float *dgh, const float *h_prev, const float *dy, float *dh);
void fc_rnn_fwd_f32(ptrdiff_t rows, ptrdiff_t H, float *g, const float *bias, int relu, float *h_copy);
void fc_rnn_bwd_f32(ptrdiff_t rows, ptrdiff_t H, const float *h, float *dg, const float *dy, const float *dh, int relu);
void fc_colsum_f32(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t ld, const float *a, float *out, int accumulate);
void fc_vsigmoid_f32(ptrdiff_t n, const float *x, float *y);
void fc_vtanh_f32(ptrdiff_t n, const float *x, float *y);

void fc_lstm_fwd_f64(ptrdiff_t rows, ptrdiff_t H, double *gates, const double *bias, const double *c_prev, double *c, double *h, double *h_copy);
void fc_lstm_bwd_f64(ptrdiff_t rows, ptrdiff_t H, double *gates, const double *c, const double *c_prev, const double *dy, const double *dh, double *dc);
void fc_gru_fwd_f64(ptrdiff_t rows, ptrdiff_t H, double *gx, const double *gh, const double *b_ih, const double *b_hh, const double *h_prev, double *h, double *h_copy, double *hn_save);
void fc_gru_bwd_f64(ptrdiff_t rows, ptrdiff_t H, double *gates, double *hn, double *dgh, const double *h_prev, const double *dy, double *dh);
void fc_rnn_fwd_f64(ptrdiff_t rows, ptrdiff_t H, double *g, const double *bias, int relu, double *h_copy);
void fc_rnn_bwd_f64(ptrdiff_t rows, ptrdiff_t H, const double *h, double *dg, const double *dy, const double *dh, int relu);
void fc_colsum_f64(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t ld, const double *a, double *out, int accumulate);
void fc_vsigmoid_f64(ptrdiff_t n, const double *x, double *y);
void fc_vtanh_f64(ptrdiff_t n, const double *x, double *y);

#ifdef __cplusplus
}
#endif
#endif
