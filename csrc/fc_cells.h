/* fc_cells.h -- prototypes of the pointwise cell kernels (contract: csrc/fc_cells_impl.h).
 * Generated from fc_cells_impl.h by tools/gen_cells_header.py; do not edit by hand. */
#ifndef FC_CELLS_H
#define FC_CELLS_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif

void fc_lstm_fwd_f32(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg, ptrdiff_t ldh, float *gates, const float *bias, const float *c_prev, float *c, float *h);
void fc_lstm_bwd_f32(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg, ptrdiff_t ldh, float *gates, const float *c, const float *c_prev, const float *dy, float *dh, float *dc);
void fc_gru_fwd_f32(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg, ptrdiff_t ldh, float *gx, const float *gh, const float *b_ih, const float *b_hh, const float *h_prev, float *h, float *hn_save);
void fc_gru_bwd_f32(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg, ptrdiff_t ldh, float *gates, float *hn, const float *h_prev, const float *dy, float *dh);
void fc_gru1_fwd_a_f32(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg, ptrdiff_t ldh, float *gx, const float *gh, const float *b_ih, const float *b_hh, const float *h_prev, float *rh);
void fc_gru1_fwd_b_f32(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg, ptrdiff_t ldh, float *gx, const float *gh, const float *b_ih, const float *b_hh, const float *h_prev, float *h);
void fc_gru1_bwd_a_f32(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg, ptrdiff_t ldh, float *gates, const float *h_prev, const float *dy, float *dh);
void fc_gru1_bwd_b_f32(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg, ptrdiff_t ldh, float *gates, const float *drh, const float *h_prev, float *dh);
void fc_rnn_fwd_f32(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg, ptrdiff_t ldh, float *g, const float *bias, int relu);
void fc_rnn_bwd_f32(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg, ptrdiff_t ldh, const float *h, float *dg, const float *dy, float *dh, int relu);
void fc_colsum_f32(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t ld, const float *a, float *out, int accumulate);
void fc_act_rows_f32(int kind, ptrdiff_t rows, ptrdiff_t n, const float *a, ptrdiff_t lda, const float *b, float *out, ptrdiff_t ldo);
void fc_vsigmoid_f32(ptrdiff_t n, const float *x, float *y);
void fc_vtanh_f32(ptrdiff_t n, const float *x, float *y);
void fc_pack_b_f32(ptrdiff_t K, ptrdiff_t N, const float *src, ptrdiff_t rs, ptrdiff_t cs, float *Bp, ptrdiff_t p0, ptrdiff_t p1);
void fc_gemm_packed_f32(ptrdiff_t M, ptrdiff_t n0, ptrdiff_t n1, ptrdiff_t K, const float *A, ptrdiff_t lda, const float *Bp, ptrdiff_t kp, float *C, ptrdiff_t ldc, int accumulate);
void fc_gemm_rows_f32(ptrdiff_t M, ptrdiff_t n0, ptrdiff_t n1, ptrdiff_t K, const float *A, ptrdiff_t lda, const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, int accumulate);
void fc_gemm_tn_f32(ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t N, ptrdiff_t K, const float *A, ptrdiff_t lda, const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, int accumulate);
ptrdiff_t fc_packed_size_f32(ptrdiff_t K, ptrdiff_t N);
ptrdiff_t fc_packed_panel_width_f32(void);

void fc_lstm_fwd_f64(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg, ptrdiff_t ldh, double *gates, const double *bias, const double *c_prev, double *c, double *h);
void fc_lstm_bwd_f64(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg, ptrdiff_t ldh, double *gates, const double *c, const double *c_prev, const double *dy, double *dh, double *dc);
void fc_gru_fwd_f64(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg, ptrdiff_t ldh, double *gx, const double *gh, const double *b_ih, const double *b_hh, const double *h_prev, double *h, double *hn_save);
void fc_gru_bwd_f64(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg, ptrdiff_t ldh, double *gates, double *hn, const double *h_prev, const double *dy, double *dh);
void fc_gru1_fwd_a_f64(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg, ptrdiff_t ldh, double *gx, const double *gh, const double *b_ih, const double *b_hh, const double *h_prev, double *rh);
void fc_gru1_fwd_b_f64(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg, ptrdiff_t ldh, double *gx, const double *gh, const double *b_ih, const double *b_hh, const double *h_prev, double *h);
void fc_gru1_bwd_a_f64(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg, ptrdiff_t ldh, double *gates, const double *h_prev, const double *dy, double *dh);
void fc_gru1_bwd_b_f64(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg, ptrdiff_t ldh, double *gates, const double *drh, const double *h_prev, double *dh);
void fc_rnn_fwd_f64(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg, ptrdiff_t ldh, double *g, const double *bias, int relu);
void fc_rnn_bwd_f64(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg, ptrdiff_t ldh, const double *h, double *dg, const double *dy, double *dh, int relu);
void fc_colsum_f64(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t ld, const double *a, double *out, int accumulate);
void fc_act_rows_f64(int kind, ptrdiff_t rows, ptrdiff_t n, const double *a, ptrdiff_t lda, const double *b, double *out, ptrdiff_t ldo);
void fc_vsigmoid_f64(ptrdiff_t n, const double *x, double *y);
void fc_vtanh_f64(ptrdiff_t n, const double *x, double *y);
void fc_pack_b_f64(ptrdiff_t K, ptrdiff_t N, const double *src, ptrdiff_t rs, ptrdiff_t cs, double *Bp, ptrdiff_t p0, ptrdiff_t p1);
void fc_gemm_packed_f64(ptrdiff_t M, ptrdiff_t n0, ptrdiff_t n1, ptrdiff_t K, const double *A, ptrdiff_t lda, const double *Bp, ptrdiff_t kp, double *C, ptrdiff_t ldc, int accumulate);
void fc_gemm_rows_f64(ptrdiff_t M, ptrdiff_t n0, ptrdiff_t n1, ptrdiff_t K, const double *A, ptrdiff_t lda, const double *B, ptrdiff_t ldb, double *C, ptrdiff_t ldc, int accumulate);
void fc_gemm_tn_f64(ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t N, ptrdiff_t K, const double *A, ptrdiff_t lda, const double *B, ptrdiff_t ldb, double *C, ptrdiff_t ldc, int accumulate);
ptrdiff_t fc_packed_size_f64(ptrdiff_t K, ptrdiff_t N);
ptrdiff_t fc_packed_panel_width_f64(void);

#ifdef __cplusplus
}
#endif
#endif
