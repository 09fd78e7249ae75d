"""Which tests fail when a setting stops taking effect: for every setting that a script's
--help lists, the tests that show its effect, or in NOT_SHOWN why no test can.
tests/test_train_evaluate.py checks that this list is complete and names tests that exist."""

TRAIN = {  # train.py's own settings; bench/deeper.py passes the same ones to train.run_training
    "data": ("test_settings_of_train_take_effect", "test_a_lone_argument_is_the_data_path_where_that_is_obvious",
             "test_a_folder_of_class_subfolders_trains_with_its_names"),
    "prepared_dir": ("test_settings_of_train_take_effect",),
    "out_dir": ("test_settings_of_train_take_effect",),
    "seed": ("test_settings_of_train_take_effect", "test_every_epoch_comes_from_seed_and_epoch_alone"),
    "batch_size": ("test_settings_of_train_take_effect", "test_train_then_evaluate_on_a_36_class_pickle"),
    "epochs": ("test_settings_of_train_take_effect", "test_learning_rate_drops_on_a_plateau_and_cosine_decays"),
    "learning_rate": ("test_settings_of_the_optimiser", "test_early_stopping_ends_a_run_that_stopped_improving"),
    "lr_schedule": ("test_the_size_rule_chooses_cosine_for_a_small_split_and_plateau_for_a_large_one",
                    "test_learning_rate_drops_on_a_plateau_and_cosine_decays"),
    "lr_drop_patience": ("test_learning_rate_drops_on_a_plateau_and_cosine_decays",),
    "lr_drop_factor": ("test_learning_rate_drops_on_a_plateau_and_cosine_decays",),
    "patience": ("test_early_stopping_ends_a_run_that_stopped_improving",),
    "weight_decay": ("test_settings_of_the_optimiser",),
    "label_smoothing": ("test_settings_of_the_optimiser",),
    "augment": ("test_augment_settings_reach_the_pipeline", "test_settings_of_train_take_effect"),
    "augment_epochs": ("test_every_epoch_comes_from_seed_and_epoch_alone",
                       "test_settings_that_are_set_are_kept_by_the_size_rule"),
    "small_data": ("test_the_size_rule_chooses_cosine_for_a_small_split_and_plateau_for_a_large_one",),
    "fresh": ("test_killed_run_resumes_exactly_like_an_uninterrupted_one",
              "test_resume_with_other_settings_is_refused"),
    "set_aside": ("test_a_best_model_of_other_data_is_set_aside_never_deleted",),
    "deterministic": ("test_same_seed_same_run_and_the_determinism_switch",),
    "distribute": ("test_mirrored_strategy_path_runs_on_one_cpu_replica",),
    "verbose": ("test_settings_of_train_take_effect",),
    "tensorboard": ("test_tensorboard_logs_loss_accuracy_and_learning_rate_per_epoch",),
    "teacher": ("test_a_student_learns_from_its_teacher_and_resumes_exactly",
                "test_a_teacher_of_other_data_or_another_split_is_refused"),
    "distill_temperature": ("test_a_student_learns_from_its_teacher_and_resumes_exactly",),
    "label_weight": ("test_a_student_learns_from_its_teacher_and_resumes_exactly",),
    "init_from": ("test_a_run_starts_from_a_trained_model_with_a_new_head_where_classes_differ",),
    "freeze_epochs": ("test_frozen_convolutions_stay_as_given_then_learn_and_resume_exactly",),
    "calibrate": ("test_the_temperature_fitted_on_validation_is_inside_the_model",),
    "settings": ("test_settings_file_is_read_first_and_refused_when_wrong",
                 "test_tune_prunes_never_reads_test_and_its_best_trains_again_the_same"),
    "class_weight": ("test_balanced_class_weights_reach_the_loss",),
}
TUNED = "test_tune_prunes_never_reads_test_and_its_best_trains_again_the_same"
TUNE = {  # tune.py's own settings
    "out_dir": (TUNED, "test_two_workers_share_one_study_in_postgresql"),
    "trials": (TUNED, "test_a_study_killed_mid_trial_finishes_without_redoing_finished_trials"),
    "storage": ("test_two_workers_share_one_study_in_postgresql",
                "test_refusals_come_before_tensorflow_in_one_line"),
    "study": ("test_refusals_come_before_tensorflow_in_one_line",),
    "prune": (TUNED, "test_a_study_killed_mid_trial_finishes_without_redoing_finished_trials"),
    "prune_after_trials": (TUNED,),
    "prune_after_epochs": (TUNED,),
    "lost_after": ("test_another_machines_lost_trial_runs_again_after_lost_after",),
    "plots": (TUNED,),
    **{f"search_{name}": (TUNED, "test_the_search_space_at_the_top_of_tune_py_is_valid")
       for name in ("learning_rate", "batch_size", "dense_units", "filters_1", "filters_2",
                    "dropout", "crop_px", "scale", "rotate", "augment_epochs",
                    "label_smoothing", "class_weight")},
}
MODEL = {  # model.py's sizes: build_model's arguments, from train.py and model.py's command line
    name: ("test_model_sizes_follow_its_arguments", "test_settings_of_train_take_effect")
    for name in ("filters_1", "kernel_1", "stride_1", "filters_2", "kernel_2", "dense_units",
                 "dropout", "precision")}
MODEL["network"] = ("test_the_teacher_trains_by_the_same_recipe_and_resumes_exactly",
                    "test_model_py_shows_the_teacher_and_refuses_bad_widths")
MODEL["teacher_widths"] = ("test_the_teacher_trains_by_the_same_recipe_and_resumes_exactly",
                           "test_model_py_shows_the_teacher_and_refuses_bad_widths",
                           "test_deeper_probe_trains_its_own_network_with_train_py_recipe")
AUGMENT = {  # augment.py's ranges: from train.py (pipeline) and augment.py's command line (grid)
    "crop_px": ("test_tensorflow_augmentation_matches_the_contract", "test_augment_settings_reach_the_pipeline",
                "test_preview_grid_shows_originals_and_their_augmented_copies"),
    "scale": ("test_keep_aspect_keeps_a_characters_proportions", "test_augment_settings_reach_the_pipeline"),
    "rotate": ("test_rotation_turns_images_within_its_range", "test_backend_setting_picks_the_implementation"),
    "keep_aspect": ("test_keep_aspect_keeps_a_characters_proportions",),
    "elastic": ("test_elastic_bends_without_moving_the_character_away",),
    "share": ("test_share_leaves_the_other_images_untouched", "test_augment_settings_reach_the_pipeline",
              "test_preview_grid_shows_originals_and_their_augmented_copies"),
    "stroke": ("test_stroke_makes_lines_thicker_or_thinner", "test_augment_settings_reach_the_pipeline"),
    "backend": ("test_backend_setting_picks_the_implementation",
                "test_preview_grid_shows_originals_and_their_augmented_copies"),
}
CEILING = "test_ceiling_compares_models_of_one_split"
LEVERS = "test_lever_study_runs_caches_and_reports"
PROOFS = {
    **{f"train.py --{name}": tests for name, tests in {**TRAIN, **MODEL, **AUGMENT}.items()},
    **{f"model.py --{name}": tests for name, tests in MODEL.items()},
    **{f"augment.py --{name}": tests for name, tests in AUGMENT.items()},
    **{f"bench/deeper.py --{name}": tests + ("test_deeper_probe_trains_its_own_network_with_train_py_recipe",)
       for name, tests in {**TRAIN, **MODEL, **AUGMENT}.items()},
    **{f"tune.py --{name}": tests for name, tests in TUNE.items()},
    **{f"tune.py --{name}": tests + (TUNED,) for name, tests in {**TRAIN, **MODEL, **AUGMENT}.items()
       if name not in TUNE},
    "prepare_data.py --input": ("test_cli_prints_class_table", "test_a_lone_argument_is_the_data_path_where_that_is_obvious",
                                "test_an_odd_folder_gets_one_clear_line"),
    "prepare_data.py --output": ("test_a_folder_becomes_the_users_pickle",),
    "prepare_data.py --prepared_dir": ("test_cli_prints_class_table",),
    "prepare_data.py --seed": ("test_cli_prints_class_table",),
    "evaluate.py --checkpoint": ("test_evaluate_refuses_missing_and_foreign_checkpoints",),
    "evaluate.py --data": ("test_train_then_evaluate_on_a_36_class_pickle", "test_settings_of_evaluate_take_effect"),
    "evaluate.py --prepared_dir": ("test_settings_of_evaluate_take_effect",),
    "evaluate.py --split": ("test_settings_of_evaluate_take_effect", "test_evaluate_rejects_a_bad_split"),
    "evaluate.py --batch_size": ("test_settings_of_evaluate_take_effect",),
    "evaluate.py --labels": ("test_settings_of_evaluate_take_effect",),
    "evaluate.py --plots": ("test_evaluate_reports_and_plots",),
    "evaluate.py --json": ("test_evaluate_json_has_the_metrics_for_machines",),
    "evaluate.py --top_confusions": ("test_settings_of_evaluate_take_effect",),
    "evaluate.py --errors": ("test_evaluate_and_predict_show_the_folder_names",
                             "test_errors_name_the_file_of_a_folder_and_the_row_of_a_pickle"),
    "evaluate.py --suspects": ("test_flipped_labels_come_out_on_top_of_the_suspects",),
    "evaluate.py --folds": ("test_flipped_labels_come_out_on_top_of_the_suspects",),
    "evaluate.py --top_suspects": ("test_flipped_labels_come_out_on_top_of_the_suspects",),
    "evaluate.py --confidences": ("test_evaluate_reports_and_plots",),
    "predict.py --min_confidence": ("test_predict_reads_back_pngs_with_evaluates_labels",),
    "serve.py --min_confidence": ("test_settings_of_serve", "test_drawing_in_a_real_browser"),
    "predict.py --checkpoint": ("test_predict_reads_back_pngs_with_evaluates_labels",),
    "predict.py --labels": ("test_predict_reads_back_pngs_with_evaluates_labels",),
    "predict.py --top": ("test_predict_reads_back_pngs_with_evaluates_labels",),
    "predict.py --json": ("test_predict_reads_back_pngs_with_evaluates_labels",),
    "predict.py --min_stroke": ("test_framing_settings_for_image_files",),
    "predict.py --speck_share": ("test_framing_settings_for_image_files",),
    "predict.py --lite": ("test_predict_answers_from_litert_copies_without_tensorflow",),
    "serve.py --checkpoint": ("test_refused_at_start_with_one_line", "test_drawing_in_a_real_browser"),
    "serve.py --host": ("test_drawing_in_a_real_browser", "test_a_host_on_the_network_is_warned_about"),
    "serve.py --port": ("test_drawing_in_a_real_browser",),
    "serve.py --max_upload_mb": ("test_settings_of_serve",),
    "serve.py --max_pixels": ("test_settings_of_serve",),
    "serve.py --labels": ("test_settings_of_serve",),
    "serve.py --top": ("test_settings_of_serve", "test_drawing_in_a_real_browser"),
    "serve.py --large_pixels": ("test_a_few_images_are_framed_at_once_the_rest_answered_busy",),
    "serve.py --small_slots": ("test_a_few_images_are_framed_at_once_the_rest_answered_busy",),
    "export.py --checkpoint": ("test_exports_reload_without_this_repo_and_agree", "test_export_settings_and_refusals"),
    "export.py --export_dir": ("test_export_settings_and_refusals",),
    "export.py --labels": ("test_export_settings_and_refusals",),
    "export.py --tflite": ("test_export_settings_and_refusals",),
    "export.py --int8": ("test_export_settings_and_refusals", "test_exports_reload_without_this_repo_and_agree"),
    "export.py --calibration_images": ("test_export_settings_and_refusals",),
    "export.py --data": ("test_export_settings_and_refusals",),
    "export.py --prepared_dir": ("test_export_settings_and_refusals",),
    **{f"bench/accuracy.py --{name}": ("test_accuracy_benchmark_runs_both_recipes",)
       for name in ("data", "seeds", "reference_augment", "reference_steps", "train_args", "quick",
                    "work_dir", "output")},
    **{f"bench/speed.py --{name}": ("test_speed_benchmark_reports_every_measure",)
       for name in ("data", "train_images", "test_images", "folder_images", "output", *MODEL)},
    **{f"bench/levers.py --{name}": (LEVERS,)
       for name in ("finalists", "seeds", "only", "datasets", "train_args", "run", "split",
                    "quick", "work_dir", "output")},
    **{f"bench/profile.py --{name}": ("test_profile_breaks_a_step_down",)
       for name in ("batch_size", "pipeline_steps", "output")},
    **{f"bench/speed_levers.py --{name}": ("test_speed_levers_time_each_lever_against_the_baseline",)
       for name in ("only", "repeats", "rounds", "steps", "output")},
    "bench/speed_levers.py --child": ("test_a_speed_levers_process_times_both_ways",
                                      "test_speed_levers_time_each_lever_against_the_baseline"),
    **{f"bench/starting_points.py --{name}": ("test_starting_points_compare_scratch_and_init_from",)
       for name in ("data", "sources", "per_class", "seeds", "train_args", "work_dir", "output")},
    **{f"bench/ceiling.py --{name}": (CEILING,)
       for name in ("data", "data_seed", "split", "shift", "labels", "top_confusions",
                    "prepared_dir", "output")},
}
NOT_SHOWN = {
    "bench/speed.py --epochs": "how many epochs are timed: it changes how long the timing "
                               "takes, which no test measures",
    "bench/speed.py --command_repeats": "how many runs of each command give its time: it "
                                        "changes how steady the figures are, not what they "
                                        "measure",
    "bench/profile.py --repeats": "how many timed calls give each median: it changes how steady "
                                  "the figures are, not what they measure",
    "bench/levers.py --jobs": "how many runs share the machine: it changes the wall time, not "
                              "any figure a test can read",
}
